package chanscale.main_test

import data.chanscale.fixtures
import data.chanscale.main

monday_noon_freeze := {"windows": {"windows": [{"name": "release", "start": "11:00", "end": "13:00"}]}}

test_allow_without_guards if {
	main.decision == {
		"allow": true, "replicas": 6, "escalated": false, "labels": {}, "limitedBy": [],
		"reasons": ["allowed: no guard limits 4 -> 6 replicas"],
	} with input as fixtures.proposal(4, 6, {})
}

test_no_change if {
	d := main.decision with input as fixtures.proposal(4, 4, monday_noon_freeze)
	d.allow
	d.replicas == 4
	d.reasons == ["no change proposed (4 replicas)"]
}

test_clamps_tightest_first if {
	params := {"step": {"maxUp": 3}, "caps": {"maxReplicas": 12}}
	d := main.decision with input as fixtures.proposal(4, 20, params)
	d.allow
	d.replicas == 7
	d.limitedBy == ["step", "caps"]
	d.reasons == [
		"step: at most +3 replicas per decision (proposed +16)",
		"caps: hard cap of 12 replicas (proposed 20); raise it with an explicit override {maxReplicas, reason} in spec.policy.parameters.caps.override",
	]
}

test_clamp_never_reverses_direction if {
	d := main.decision with input as fixtures.proposal(15, 18, {"caps": {"maxReplicas": 12}})
	d.allow
	d.replicas == 15
	d.limitedBy == ["caps"]
}

test_scale_down_tightest_first if {
	params := {"step": {"maxDown": 2}, "caps": {"minReplicas": 3}}
	d := main.decision with input as fixtures.proposal(10, 1, params)
	d.allow
	d.replicas == 8
	d.limitedBy == ["step", "caps"]
}

test_scale_down_floor if {
	d := main.decision with input as fixtures.proposal(5, 1, {"caps": {"minReplicas": 3}})
	d.replicas == 3
	d.reasons == ["caps: hard floor of 3 replicas (proposed 1)"]
}

test_denial_beats_clamp if {
	params := object.union(monday_noon_freeze, {"step": {"maxUp": 1}})
	d := main.decision with input as fixtures.proposal(4, 20, params)
	not d.allow
	d.replicas == 4
	d.limitedBy == ["windows"]
	d.reasons == ["windows: freeze window \"release\" is active (11:00-13:00 UTC): no scaling"]
}

test_denials_ordered_windows_first if {
	params := object.union(monday_noon_freeze, {"errorBrake": {"enabled": true}})
	inp := object.union(fixtures.proposal(4, 20, params), {"signals": {"errorRate": 0.5}})
	d := main.decision with input as inp
	not d.allow
	d.limitedBy == ["windows", "errorBrake"]
	count(d.reasons) == 2
	startswith(d.reasons[0], "windows: ")
	startswith(d.reasons[1], "error-brake: ")
}

test_escalated if {
	inp := object.union(fixtures.proposal(4, 40, {"step": {"maxUp": 2}}), {"signals": {"backlog": 20000}})
	d := main.decision with input as inp
	d.allow
	d.escalated
	d.labels == {"chanscale.dev/escalated": "true"}
	d.replicas == 12
	d.reasons == [
		"step: at most +8 replicas per decision while escalated (proposed +36)",
		"escalation: backlog 20000 >= 10000 messages: pool escalated, larger upward steps allowed",
	]
}

test_allowed_with_notes if {
	inp := object.union(fixtures.proposal(4, 6, {}), {"signals": {"backlog": 20000}})
	d := main.decision with input as inp
	d.reasons == [
		"allowed: no guard limits 4 -> 6 replicas",
		"escalation: backlog 20000 >= 10000 messages: pool escalated, larger upward steps allowed",
	]
}

test_budget_and_step_same_bound_ordered_by_rank if {
	params := {"step": {"maxUp": 2}, "budget": {"maxReplicas": 6}}
	d := main.decision with input as fixtures.proposal(4, 9, params)
	d.replicas == 6
	d.limitedBy == ["budget", "step"]
}

test_incomplete_input_denied if {
	d := main.decision with input as {"pool": {}}
	not d.allow
	d.limitedBy == ["main"]
	startswith(d.reasons[0], "main: input is incomplete")
}

test_locked_guard_ignores_pool_override_and_says_so if {
	params := {"caps": {"maxReplicas": 100, "override": {"maxReplicas": 50, "reason": "mine"}}}
	cfg := {"defaults": {"caps": {"maxReplicas": 3}}, "locked": ["caps"]}
	d := main.decision with input as fixtures.proposal(1, 10, params) with data.chanscale.config as cfg
	d.allow
	d.replicas == 3
	d.limitedBy == ["caps"]
	d.reasons == [
		"caps: hard cap of 3 replicas (proposed 10); raise it with an explicit override {maxReplicas, reason} in spec.policy.parameters.caps.override",
		"caps: locked by the cluster admin; spec.policy.parameters.caps ignored",
	]
}
