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

# The other pools' claims, summed by the operator (input.namespace.others.claimed: each pool counts the larger of
# its current and desired replicas). Without it the budget cannot be checked, so a scale-up holds.
others := input.namespace.others.claimed if is_number(input.namespace.others.claimed)

available := max([budget - others, 0]) if is_number(others)

else := 0

held := sprintf("the others hold %d", [others]) if is_number(others)

else := "the others' claims are missing (input.namespace.others)"

limits contains {"guard": "budget", "kind": "upper", "bound": available, "reason": msg} if {
	lib.scaling_up
	available < lib.proposed
	msg := sprintf(
		"budget: namespace %q may run %d replicas across its pools; %s, so this pool may have at most %d (proposed %d)",
		[lib.namespace, budget, held, available, lib.proposed],
	)
}
