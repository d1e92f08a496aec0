package chanscale.lib_test

import data.chanscale.fixtures
import data.chanscale.lib

test_direction_up if {
	lib.scaling_up with input as fixtures.proposal(2, 5, {})
	not lib.scaling_down with input as fixtures.proposal(2, 5, {})
}

test_direction_down if {
	lib.scaling_down with input as fixtures.proposal(5, 2, {})
	not lib.scaling_up with input as fixtures.proposal(5, 2, {})
}

cfg := {
	"defaults": {"step": {"maxUp": 4, "maxDown": 1}, "budget": {"maxReplicas": 10}},
	"namespaces": {"shop": {"step": {"maxDown": 2}, "budget": {"maxReplicas": 20}}},
	"locked": ["budget"],
}

test_params_layering if {
	p := lib.params("step") with input as fixtures.proposal(2, 5, {"step": {"maxUp": 8}})
		with data.chanscale.config as cfg
	p == {"maxUp": 8, "maxDown": 2}
}

test_params_locked_ignores_pool if {
	p := lib.params("budget") with input as fixtures.proposal(2, 5, {"budget": {"maxReplicas": 999}})
		with data.chanscale.config as cfg
	p == {"maxReplicas": 20}
}

test_params_non_object_ignored if {
	p := lib.params("step") with input as fixtures.proposal(2, 5, {"step": 4})
		with data.chanscale.config as {}
	p == {}
}

test_params_without_config if {
	p := lib.params("step") with input as fixtures.proposal(2, 5, {"step": {"maxUp": 1}})
		with data.chanscale.config as {}
	p == {"maxUp": 1}
}

test_num if {
	lib.num(3) == 3
	lib.num(null) == 0
}

test_pct if {
	lib.pct(0.125) == "12.5%"
}

test_pct_integer if {
	lib.pct(0.12) == "12%"
}
