package chanscale.step_test

import data.chanscale.fixtures
import data.chanscale.step

test_off_by_default if {
	count(step.limits) == 0 with input as fixtures.proposal(1, 50, {})
}

test_limits_scale_up if {
	step.limits == {{
		"guard": "step", "kind": "upper", "bound": 7,
		"reason": "step: at most +4 replicas per decision (proposed +12)",
	}} with input as fixtures.proposal(3, 15, {"step": {"maxUp": 4}})
}

test_within_step_up if {
	count(step.limits) == 0 with input as fixtures.proposal(3, 7, {"step": {"maxUp": 4}})
}

test_limits_scale_down if {
	step.limits == {{
		"guard": "step", "kind": "lower", "bound": 8,
		"reason": "step: at most -2 replicas per decision (proposed -9)",
	}} with input as fixtures.proposal(10, 1, {"step": {"maxDown": 2}})
}

test_down_only_limit_ignores_up if {
	count(step.limits) == 0 with input as fixtures.proposal(1, 30, {"step": {"maxDown": 2}})
}

escalated_input := object.union(fixtures.proposal(3, 40, {"step": {"maxUp": 4}}), {"signals": {"backlog": 50000}})

test_escalated_step_uses_factor if {
	step.limits == {{
		"guard": "step", "kind": "upper", "bound": 19,
		"reason": "step: at most +16 replicas per decision while escalated (proposed +37)",
	}} with input as escalated_input
}

test_escalated_step_uses_explicit_max_up if {
	inp := object.union(escalated_input, {"pool": {"spec": {"policy": {"parameters": {"escalation": {"maxUp": 10}}}}}})
	[l.bound | some l in step.limits] == [13] with input as inp
}
