{{/* Chart name, overridable. */}}
{{- define "chanscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name prefix of every object: release name, plus the chart name unless the release already has it. */}}
{{- define "chanscale.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "chanscale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "chanscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chanscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "chanscale.labels" -}}
helm.sh/chart: {{ include "chanscale.chart" . }}
app.kubernetes.io/name: {{ include "chanscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chanscale
{{- end }}

{{- define "chanscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chanscale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image reference: the digest wins over the tag; the tag defaults to appVersion. */}}
{{- define "chanscale.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The --opa argument pair for `chanscale run`. */}}
{{- define "chanscale.opaArgs" -}}
{{- if .Values.opa.enabled }}
- --opa-url
- {{ printf "http://127.0.0.1:%d" (int .Values.opa.port) | quote }}
{{- else if .Values.opa.externalUrl }}
- --opa-url
- {{ .Values.opa.externalUrl | quote }}
{{- else }}
- --opa
- none
{{- end }}
{{- end }}

{{/*
The policy files for the ConfigMap, as {key: {path, content}}: the generated copies of policies/ (hack/sync-
generated.sh; directories kept, because OPA derives a data document's path from its directory) plus
opa.extraPolicies at the top level. ConfigMap keys cannot contain "/", so the key is the path with "/" -> "_",
and the volume's items put each key back at its path.
*/}}
{{- define "chanscale.policyFiles" -}}
{{- $files := dict }}
{{- range $path, $_ := .Files.Glob "files/policies/**" }}
{{- $rel := trimPrefix "files/policies/" $path }}
{{- if or (hasSuffix ".rego" $rel) (hasSuffix "/data.json" $rel) (eq "data.json" $rel) }}
{{- $key := replace "/" "_" $rel }}
{{- if hasKey $files $key }}
{{- fail (printf "policy files %s and %s map to the same ConfigMap key %s; rename one" (get (get $files $key) "path") $rel $key) }}
{{- end }}
{{- $content := $.Files.Get $path }}
{{- if eq $rel "chanscale/config/data.json" }}
{{- /* The admin's policy.config merged over the shipped data: locked guards set through Helm, one document. */}}
{{- $content = mergeOverwrite ($content | fromJson) (deepCopy $.Values.policy.config) | toPrettyJson }}
{{- end }}
{{- $_ := set $files $key (dict "path" $rel "content" $content) }}
{{- end }}
{{- end }}
{{- range $name, $content := .Values.opa.extraPolicies }}
{{- if hasKey $files $name }}
{{- fail (printf "opa.extraPolicies.%s clashes with a shipped policy file; rename it" $name) }}
{{- end }}
{{- $_ := set $files $name (dict "path" $name "content" $content) }}
{{- end }}
{{- toYaml $files }}
{{- end }}

{{/* The rules chanscale itself needs in every namespace it manages (RBAC split: kopf's own needs are separate).
Each rule is exercised by the integration tests running under the chart's ServiceAccount (docs/security.md). */}}
{{- define "chanscale.operatorRules" -}}
# WorkerPools: list and watch them (kopf's watch and indexes), patch metadata (kopf's finalizer and annotations).
- apiGroups: [chanscale.dev]
  resources: [workerpools]
  verbs: [list, watch, patch]
# WorkerPool status: the decision, signals and conditions.
- apiGroups: [chanscale.dev]
  resources: [workerpools/status]
  verbs: [patch]
# Worker Deployments: read through kopf's index (list/watch) to find the target and its replicas.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch]
# Scaling goes through the scale subresource only (field manager "chanscale"): replicas, never the pod template.
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [patch]
# Conflict detection: refuse to fight an HPA or a KEDA ScaledObject (paused ones included) on the same target.
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch]
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [list, watch]
# Events explaining each decision (kopf posts core v1 Events).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.directMetrics.enabled }}
# The direct path (directMetrics.enabled): an index of the labelled worker pods (their IP and metrics port).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
{{- end }}
{{- range .Values.rbac.scaleTargets }}
# Opt-in scale target {{ .kind }}.{{ .apiGroup }}: its scale subresource only (read the replicas, write them).
- apiGroups: [{{ .apiGroup | quote }}]
  resources: [{{ printf "%s/scale" .resource | quote }}]
  verbs: [get, patch]
{{- end }}
{{- end }}

{{/* Template mode (rbac.templateNamespaces): create and update the Deployment a spec.template pool owns. */}}
{{- define "chanscale.templateRules" -}}
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, create, patch]
{{- end }}

{{/* The guardrail flags of `chanscale run`, from the admin's values. */}}
{{- define "chanscale.guardrailArgs" -}}
- --failure-policy
- {{ .Values.policy.failurePolicy | quote }}
- --policy-peers
- {{ .Values.policy.peerList | default "auto" | quote }}
{{- range $name, $path := .Values.policy.profiles }}
- --policy-profile
- {{ printf "%s=%s" $name $path | quote }}
{{- end }}
{{- range .Values.prometheus.allowedUrls }}
- --prometheus-allowed-url
- {{ . | quote }}
{{- end }}
{{- with .Values.prometheus.scrapeInterval }}
- --scrape-interval
- {{ . | quote }}
{{- end }}
{{- if .Values.prometheus.customQueries }}
- --allow-custom-queries
{{- end }}
{{- range .Values.rbac.templateNamespaces }}
- --template-namespace
- {{ . | quote }}
{{- end }}
{{- range .Values.rbac.scaleTargets }}
- --scale-kind
- {{ printf "%s.%s" .kind .apiGroup | quote }}
{{- end }}
{{- end }}

{{/* Fail early, with a message naming the value, on combinations the schema cannot express. */}}
{{- define "chanscale.validate" -}}
{{- if and .Values.leaderElection.enabled (not (gt (float64 .Values.leaderElection.leaseDurationSeconds) (float64 .Values.leaderElection.renewDeadlineSeconds))) }}
{{- fail "leaderElection: leaseDurationSeconds must exceed renewDeadlineSeconds (the gap covers a tick in flight)" }}
{{- end }}
{{- if and .Values.pdb.enabled .Values.pdb.minAvailable (ne (toString .Values.pdb.maxUnavailable) "") }}
{{- fail "pdb: set either pdb.maxUnavailable or pdb.minAvailable, not both (set the other to \"\")" }}
{{- end }}
{{- if and (not .Values.opa.enabled) .Values.opa.extraPolicies }}
{{- fail "opa.extraPolicies needs opa.enabled=true (the policies are loaded by the OPA sidecar)" }}
{{- end }}
{{- if and (or .Values.serviceMonitor.enabled .Values.podMonitor.enabled) (eq (int .Values.operator.metricsPort) 0) }}
{{- fail "serviceMonitor/podMonitor need operator.metricsPort > 0 (0 disables the metrics endpoint)" }}
{{- end }}
{{- $auth := .Values.prometheus.auth }}
{{- if and $auth.bearerToken.secretName $auth.basicAuth.username }}
{{- fail "prometheus.auth: set either bearerToken.secretName or basicAuth.username, not both" }}
{{- end }}
{{- if ne (empty $auth.basicAuth.username) (empty $auth.basicAuth.secretName) }}
{{- fail "prometheus.auth.basicAuth: set both username and secretName (the Secret holds the password)" }}
{{- end }}
{{- if and .Values.prometheus.tls.ca.secretName .Values.prometheus.tls.ca.configMapName }}
{{- fail "prometheus.tls.ca: set either secretName or configMapName, not both" }}
{{- end }}
{{- end }}

{{/* The operator's Prometheus credentials: flags naming files the Secrets are mounted at (chanscale.promauth). */}}
{{- define "chanscale.prometheusAuthArgs" -}}
{{- $p := .Values.prometheus }}
{{- if $p.auth.bearerToken.secretName }}
- --prometheus-bearer-token-file
- /etc/chanscale/prometheus/token/token
{{- end }}
{{- if $p.auth.basicAuth.username }}
- --prometheus-basic-auth-user
- {{ $p.auth.basicAuth.username | quote }}
- --prometheus-basic-auth-password-file
- /etc/chanscale/prometheus/basic-auth/password
{{- end }}
{{- if or $p.tls.ca.secretName $p.tls.ca.configMapName }}
- --prometheus-ca-file
- /etc/chanscale/prometheus/ca/ca.crt
{{- end }}
{{- if $p.tls.clientCertSecretName }}
- --prometheus-cert-file
- /etc/chanscale/prometheus/client/tls.crt
- --prometheus-key-file
- /etc/chanscale/prometheus/client/tls.key
{{- end }}
{{- range $name, $value := $p.headers }}
- --prometheus-header
- {{ printf "%s=%s" $name $value | quote }}
{{- end }}
{{- end }}

{{/* The operator container's mounts of those Secrets (each in its own read-only directory). */}}
{{- define "chanscale.prometheusAuthMounts" -}}
{{- $p := .Values.prometheus }}
{{- if $p.auth.bearerToken.secretName }}
- name: prometheus-token
  mountPath: /etc/chanscale/prometheus/token
  readOnly: true
{{- end }}
{{- if $p.auth.basicAuth.username }}
- name: prometheus-basic-auth
  mountPath: /etc/chanscale/prometheus/basic-auth
  readOnly: true
{{- end }}
{{- if or $p.tls.ca.secretName $p.tls.ca.configMapName }}
- name: prometheus-ca
  mountPath: /etc/chanscale/prometheus/ca
  readOnly: true
{{- end }}
{{- if $p.tls.clientCertSecretName }}
- name: prometheus-client-cert
  mountPath: /etc/chanscale/prometheus/client
  readOnly: true
{{- end }}
{{- end }}

{{- define "chanscale.prometheusAuthVolumes" -}}
{{- $p := .Values.prometheus }}
{{- with $p.auth.bearerToken }}{{ if .secretName }}
- name: prometheus-token
  secret:
    secretName: {{ .secretName | quote }}
    items: [{key: {{ .key | quote }}, path: token}]
{{- end }}{{ end }}
{{- with $p.auth.basicAuth }}{{ if .username }}
- name: prometheus-basic-auth
  secret:
    secretName: {{ .secretName | quote }}
    items: [{key: {{ .key | quote }}, path: password}]
{{- end }}{{ end }}
{{- with $p.tls.ca }}
{{- if .secretName }}
- name: prometheus-ca
  secret:
    secretName: {{ .secretName | quote }}
    items: [{key: {{ .key | quote }}, path: ca.crt}]
{{- else if .configMapName }}
- name: prometheus-ca
  configMap:
    name: {{ .configMapName | quote }}
    items: [{key: {{ .key | quote }}, path: ca.crt}]
{{- end }}
{{- end }}
{{- with $p.tls.clientCertSecretName }}
- name: prometheus-client-cert
  secret:
    secretName: {{ . | quote }}
    items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}]
{{- end }}
{{- end }}

{{/* Leader election and shards of `chanscale run` (chanscale.leader; docs/scaling.md). */}}
{{- define "chanscale.electionArgs" -}}
{{- if .Values.leaderElection.enabled }}
- --leader-elect
- --lease-name
- {{ include "chanscale.fullname" . | quote }}
- --lease-duration
- {{ .Values.leaderElection.leaseDurationSeconds | quote }}
- --renew-deadline
- {{ .Values.leaderElection.renewDeadlineSeconds | quote }}
- --retry-period
- {{ .Values.leaderElection.retryPeriodSeconds | quote }}
{{- if gt (int .Values.leaderElection.shards) 1 }}
- --shards
- {{ .Values.leaderElection.shards | quote }}
{{- end }}
{{- end }}
{{- end }}
