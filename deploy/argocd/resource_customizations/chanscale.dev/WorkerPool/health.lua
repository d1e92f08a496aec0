-- Argo CD health check for chanscale.dev/WorkerPool, modelled on Argo CD's keda.sh/ScaledObject check.
-- Written for Lua 5.1 (gopher-lua, what Argo CD embeds) and runs unchanged on Lua 5.4 (what our tests use).
--
-- Precedence, first match wins:
--   1. no status / no conditions yet, or status.observedGeneration behind metadata.generation -> Progressing
--   2. Ready=False (TargetNotFound, TargetConflict, InvalidSpec, ...)                        -> Degraded
--   3. MetricsAvailable=False for fallback.failureThreshold ticks (like KEDA's Fallback=True) -> Degraded
--      (a shorter gap is a blip: the pool holds, and the message below says so)
--   4. Paused=True, spec.paused, the chanscale.dev/paused annotation, or spec.mode DryRun    -> Suspended
--   5. Ready missing or Unknown                                                               -> Progressing
--   6. otherwise                                                                              -> Healthy
-- A missed SLO (SLOMet=False) while Ready stays Healthy: the operator is doing its job (scaling, or held by
-- maxReplicas / policy), and a load spike must not flip Argo CD sync waves or page through Argo CD
-- notifications. The message says so, naming ScalingLimited or PolicyAllowed=False when they are the cause.
local hs = {}

local function conditions_by_type(o)
  local byType = {}
  if o.status ~= nil and o.status.conditions ~= nil then
    for _, c in ipairs(o.status.conditions) do
      if c.type ~= nil then
        byType[c.type] = c
      end
    end
  end
  return byType
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.message
  if text == nil or text == "" then
    text = fallback
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason .. ": " .. text
  end
  return text
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function is_false(c)
  return c ~= nil and c.status == "False"
end

local conds = conditions_by_type(obj)
local ready = conds["Ready"]

if obj.status == nil or obj.status.conditions == nil or next(obj.status.conditions) == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for chanscale to evaluate the WorkerPool"
  return hs
end

if obj.metadata ~= nil and obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for chanscale to observe generation " .. tostring(obj.metadata.generation)
  return hs
end

if is_false(ready) then
  hs.status = "Degraded"
  hs.message = describe(ready, "WorkerPool is not ready")
  return hs
end

local spec = obj.spec or {}
local metrics = conds["MetricsAvailable"]
local threshold = 3
if spec.fallback ~= nil and spec.fallback.failureThreshold ~= nil then
  threshold = spec.fallback.failureThreshold
end
local failures = obj.status.consecutiveFailures
local metrics_blip = false
if is_false(metrics) then
  if failures == nil or failures >= threshold then
    hs.status = "Degraded"
    hs.message = describe(metrics, "Signals are missing from Prometheus")
    return hs
  end
  metrics_blip = true
end

local paused = conds["Paused"]
local annotations = {}
if obj.metadata ~= nil and obj.metadata.annotations ~= nil then
  annotations = obj.metadata.annotations
end
if is_true(paused) then
  hs.status = "Suspended"
  hs.message = describe(paused, "Scaling is paused")
  return hs
end
if spec.paused == true or annotations["chanscale.dev/paused"] == "true" then
  hs.status = "Suspended"
  hs.message = "Scaling is paused"
  return hs
end
if spec.mode == "DryRun" then
  hs.status = "Suspended"
  hs.message = "DryRun: decisions are recorded but the target is never scaled"
  return hs
end

if ready == nil or ready.status ~= "True" then
  hs.status = "Progressing"
  hs.message = describe(ready, "Waiting for the WorkerPool to become ready")
  return hs
end

hs.status = "Healthy"
if metrics_blip then
  hs.message = "Holding while signals are missing (" .. tostring(failures) .. " of " .. tostring(threshold)
    .. " failures before the fallback): " .. describe(metrics, "signals missing")
  return hs
end
local slo = conds["SLOMet"]
if is_false(slo) then
  local cause = ""
  local limited = conds["ScalingLimited"]
  local policy = conds["PolicyAllowed"]
  if is_true(limited) then
    cause = " (scaling limited: " .. describe(limited, "at a bound") .. ")"
  elseif is_false(policy) then
    cause = " (policy denied: " .. describe(policy, "change not allowed") .. ")"
  end
  hs.message = "SLO missed: " .. describe(slo, "the channel is outside its SLO") .. cause
  return hs
end
hs.message = describe(ready, "WorkerPool is ready")
return hs
