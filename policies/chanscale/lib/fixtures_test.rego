# METADATA
# title: test fixtures
# description: A complete, schema-valid input document the guard tests modify.
package chanscale.fixtures

base := {
	"apiVersion": "policy.chanscale.dev/v1",
	"pool": {
		"metadata": {"namespace": "shop", "name": "orders", "labels": {"team": "checkout"}, "annotations": {}},
		"spec": {
			"channel": "orders",
			"maxReplicas": 100,
			"slo": {"p99LatencySeconds": 0.25, "maxErrorRate": 0.05},
			"policy": {"parameters": {}},
		},
	},
	"replicas": {"current": 4, "recommended": 4, "min": 1, "max": 100},
	"direction": "none",
	"signals": {
		"backlog": 100, "arrivalRate": 50, "serviceRate": 20, "processedRate": 50,
		"errorRate": 0, "p99LatencySeconds": 0.1, "ageSeconds": 2,
	},
	"history": {"lastScaleTime": null, "lastScaleDirection": null, "secondsSinceLastScale": null},
	"now": "2026-11-23T12:00:00Z",
	"namespace": {"name": "shop", "others": {"pools": 0, "replicas": 0, "claimed": 0}},
}

# proposal(cur, rec, params) is the base input proposing cur -> rec with the pool's spec.policy.parameters.
proposal(cur, rec, params) := object.union(base, {
	"replicas": {"current": cur, "recommended": rec},
	"pool": {"spec": {"policy": {"parameters": params}}},
})
