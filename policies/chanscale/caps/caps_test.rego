package chanscale.caps_test

import data.chanscale.caps
import data.chanscale.fixtures

test_off_by_default if {
	count(caps.limits) == 0 with input as fixtures.proposal(1, 90, {})
}

test_hard_cap if {
	[l.bound | some l in caps.limits] == [12] with input as fixtures.proposal(8, 20, {"caps": {"maxReplicas": 12}})
}

test_under_cap if {
	count(caps.limits) == 0 with input as fixtures.proposal(8, 12, {"caps": {"maxReplicas": 12}})
}

test_override_with_reason if {
	params := {"caps": {"maxReplicas": 12, "override": {"maxReplicas": 30, "reason": "INC-42 sale"}}}
	count(caps.limits) == 0 with input as fixtures.proposal(8, 20, params)
	caps.notes == {"caps: hard cap 12 raised to 30 by override: INC-42 sale"} with input as fixtures.proposal(8, 20, params)
}

test_override_still_caps if {
	params := {"caps": {"maxReplicas": 12, "override": {"maxReplicas": 30, "reason": "INC-42 sale"}}}
	caps.limits == {{
		"guard": "caps", "kind": "upper", "bound": 30,
		"reason": "caps: overridden cap of 30 replicas (proposed 45; override: INC-42 sale)",
	}} with input as fixtures.proposal(8, 45, params)
}

test_override_without_reason_ignored if {
	params := {"caps": {"maxReplicas": 12, "override": {"maxReplicas": 30, "reason": " "}}}
	[l.bound | some l in caps.limits] == [12] with input as fixtures.proposal(8, 20, params)
	caps.notes == {"caps: override ignored: it needs both maxReplicas (a number) and a non-empty reason"} with input as fixtures.proposal(8, 20, params)
}

test_locked_caps_ignore_pool_override if {
	params := {"caps": {"override": {"maxReplicas": 30, "reason": "please"}}}
	cfg := {"defaults": {"caps": {"maxReplicas": 12}}, "locked": ["caps"]}
	[l.bound | some l in caps.limits] == [12] with input as fixtures.proposal(8, 20, params) with data.chanscale.config as cfg
}

test_hard_floor if {
	caps.limits == {{
		"guard": "caps", "kind": "lower", "bound": 3,
		"reason": "caps: hard floor of 3 replicas (proposed 1)",
	}} with input as fixtures.proposal(6, 1, {"caps": {"minReplicas": 3}})
}
