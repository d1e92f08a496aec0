# METADATA
# title: example user policy - a floor for critical pools
# description: >-
#   How to add your own rule on top of chanscale's guards: start from data.chanscale.main.decision and tighten
#   it. Pools labelled tier=critical never scale below parameters.criticalFloor.minReplicas (default 3).
#   Point a pool at it with spec.policy.path: examples/critical_floor/decision.
# entrypoint: true
package examples.critical_floor

import data.chanscale.main

default floor := 3

floor := input.pool.spec.policy.parameters.criticalFloor.minReplicas

critical if input.pool.metadata.labels.tier == "critical"

# The standard decision would take a critical pool below its floor.
binds if {
	critical
	main.decision.allow
	main.decision.replicas < floor
	main.decision.replicas < input.replicas.current
}

bound := max([floor, main.decision.replicas]) if binds

decision := main.decision if not binds

decision := object.union(main.decision, {
	"replicas": min([bound, input.replicas.current]),
	"reasons": array.concat(
		[sprintf("critical-floor: tier=critical pools keep at least %d replicas (proposed %d)", [floor, main.decision.replicas])],
		[r | some r in main.decision.reasons; not startswith(r, "allowed: ")],
	),
	"limitedBy": array.concat(["criticalFloor"], main.decision.limitedBy),
}) if binds
