package examples.critical_floor_test

import data.chanscale.fixtures
import data.examples.critical_floor

critical(cur, rec, params) := object.union(fixtures.proposal(cur, rec, params), {"pool": {"metadata": {"labels": {"tier": "critical"}}}})

test_not_critical_is_main_decision if {
	d := critical_floor.decision with input as fixtures.proposal(6, 1, {})
	d.replicas == 1
	d.allow
}

test_critical_floor_clamps if {
	d := critical_floor.decision with input as critical(6, 1, {})
	d == {
		"allow": true, "replicas": 3, "escalated": false, "labels": {}, "limitedBy": ["criticalFloor"],
		"reasons": ["critical-floor: tier=critical pools keep at least 3 replicas (proposed 1)"],
	}
}

test_critical_floor_from_parameters_holds if {
	d := critical_floor.decision with input as critical(4, 1, {"criticalFloor": {"minReplicas": 5}})
	d.allow
	d.replicas == 4
}

test_critical_scale_up_untouched if {
	d := critical_floor.decision with input as critical(4, 9, {})
	d.replicas == 9
}
