package chanscale.budget_test

import data.chanscale.budget
import data.chanscale.fixtures

import data.chanscale.lib

ns(cur, rec, params, pools) := object.union(
	fixtures.proposal(cur, rec, params),
	{"namespace": {"name": "shop", "others": summary(pools)}},
)

# What the operator sends for these other pools (chanscale.policy.peer_summary).
summary(pools) := {
	"pools": count(pools),
	"replicas": sum([lib.num(p.replicas) | some p in pools]),
	"claimed": sum([max([lib.num(p.replicas), lib.num(object.get(p, "desiredReplicas", 0))]) | some p in pools]),
}

others := [
	{"name": "payments", "replicas": 10, "desiredReplicas": 12},
	{"name": "emails", "replicas": 5, "desiredReplicas": null},
]

test_off_by_default if {
	count(budget.limits) == 0 with input as ns(2, 50, {}, others)
}

test_budget_clamps if {
	budget.limits == {{
		"guard": "budget", "kind": "upper", "bound": 13,
		"reason": "budget: namespace \"shop\" may run 30 replicas across its pools; the others hold 17, so this pool may have at most 13 (proposed 20)",
	}} with input as ns(4, 20, {"budget": {"maxReplicas": 30}}, others)
}

test_within_budget if {
	count(budget.limits) == 0 with input as ns(4, 13, {"budget": {"maxReplicas": 30}}, others)
}

test_over_budget_floor_zero if {
	[l.bound | some l in budget.limits] == [0] with input as ns(4, 6, {"budget": {"maxReplicas": 10}}, others)
}

test_scale_down_unaffected if {
	count(budget.limits) == 0 with input as ns(6, 4, {"budget": {"maxReplicas": 10}}, others)
}

test_namespace_budget_from_data if {
	cfg := {"namespaces": {"shop": {"budget": {"maxReplicas": 20}}}, "locked": ["budget"]}
	[l.bound | some l in budget.limits] == [3] with input as ns(2, 8, {"budget": {"maxReplicas": 1000}}, others)
		with data.chanscale.config as cfg
}

test_missing_summary_holds_a_scale_up if {
	doc := json.remove(fixtures.proposal(4, 20, {"budget": {"maxReplicas": 30}}), ["namespace/others"])
	budget.limits == {{
		"guard": "budget", "kind": "upper", "bound": 0,
		"reason": "budget: namespace \"shop\" may run 30 replicas across its pools; the others' claims are missing (input.namespace.others), so this pool may have at most 0 (proposed 20)",
	}} with input as doc
}

test_the_per_pool_list_is_not_read if {
	doc := object.union(ns(4, 20, {"budget": {"maxReplicas": 30}}, others), {"namespace": {"pools": [{"name": "x", "replicas": 500}]}})
	[l.bound | some l in budget.limits] == [13] with input as doc
}
