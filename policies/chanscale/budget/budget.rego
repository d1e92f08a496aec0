# METADATA
# title: namespace budget
# description: >-
#   The replicas of all WorkerPools in a namespace stay within maxReplicas. Other pools count with the larger of
#   their current and desired replicas (a pool half-way through a scale-up already holds its claim). Only
#   scale-up is limited; a namespace already over budget holds. Off unless maxReplicas is set; set it per
#   namespace in data.chanscale.config.namespaces[ns].budget and lock "budget" so pools cannot raise it.
package chanscale.budget

import data.chanscale.lib

p := lib.params("budget")

budget := p.maxReplicas if is_number(p.maxReplicas)

others := sum([max([lib.num(x.replicas), lib.num(object.get(x, "desiredReplicas", 0))]) |
	some x in input.namespace.pools
	x.name != lib.name
])

available := max([budget - others, 0])

limits contains {"guard": "budget", "kind": "upper", "bound": available, "reason": msg} if {
	lib.scaling_up
	available < lib.proposed
	msg := sprintf(
		"budget: namespace %q may run %d replicas across its pools; the others hold %d, so this pool may have at most %d (proposed %d)",
		[lib.namespace, budget, others, available, lib.proposed],
	)
}
