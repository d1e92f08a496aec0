package chanscale.errorbrake_test

import data.chanscale.errorbrake
import data.chanscale.fixtures

failing(cur, rec, params, rate) := object.union(fixtures.proposal(cur, rec, params), {"signals": {"errorRate": rate}})

test_off_by_default if {
	count(errorbrake.denials) == 0 with input as failing(2, 8, {}, 0.5)
}

test_brakes_scale_up_with_slo_limit if {
	errorbrake.denials == {{
		"guard": "errorBrake",
		"reason": "error-brake: error rate 12% is above the 5% limit: not scaling up (more workers would add load to what is failing)",
	}} with input as failing(2, 8, {"errorBrake": {"enabled": true}}, 0.12)
}

test_explicit_limit_wins if {
	count(errorbrake.denials) == 0 with input as failing(2, 8, {"errorBrake": {"enabled": true, "maxErrorRate": 0.2}}, 0.12)
}

test_below_limit if {
	count(errorbrake.denials) == 0 with input as failing(2, 8, {"errorBrake": {"enabled": true}}, 0.01)
}

test_scale_down_not_braked if {
	count(errorbrake.denials) == 0 with input as failing(8, 2, {"errorBrake": {"enabled": true}}, 0.9)
}

test_unknown_rate_noted if {
	inp := failing(2, 8, {"errorBrake": {"enabled": true}}, null)
	count(errorbrake.denials) == 0 with input as inp
	errorbrake.notes == {"error-brake: error rate unknown this tick; brake not applied"} with input as inp
}

test_no_limit_noted if {
	inp := json.remove(failing(2, 8, {"errorBrake": {"enabled": true}}, 0.5), ["pool/spec/slo/maxErrorRate"])
	count(errorbrake.denials) == 0 with input as inp
	count(errorbrake.notes) == 1 with input as inp
}
