# METADATA
# title: hard caps
# description: >-
#   Never above maxReplicas (and, if set, never below minReplicas), whatever spec.maxReplicas says, unless an
#   explicit override {maxReplicas, reason} is given; the reason is required so every override explains itself.
#   Off unless maxReplicas or minReplicas is set. Lock it (data.chanscale.config.locked) to keep pools from
#   setting their own override.
package chanscale.caps

import data.chanscale.lib

p := lib.params("caps")

default overridden := false

overridden if {
	is_number(p.override.maxReplicas)
	is_string(p.override.reason)
	trim_space(p.override.reason) != ""
}

max_replicas := p.override.maxReplicas if overridden

max_replicas := p.maxReplicas if {
	not overridden
	is_number(p.maxReplicas)
}

min_replicas := p.minReplicas if is_number(p.minReplicas)

limits contains {"guard": "caps", "kind": "upper", "bound": max_replicas, "reason": msg} if {
	lib.scaling_up
	max_replicas < lib.proposed
	not overridden
	msg := sprintf(
		"caps: hard cap of %d replicas (proposed %d); raise it with an explicit override {maxReplicas, reason} in spec.policy.parameters.caps.override",
		[max_replicas, lib.proposed],
	)
}

limits contains {"guard": "caps", "kind": "upper", "bound": max_replicas, "reason": msg} if {
	lib.scaling_up
	max_replicas < lib.proposed
	overridden
	msg := sprintf("caps: overridden cap of %d replicas (proposed %d; override: %s)", [max_replicas, lib.proposed, p.override.reason])
}

limits contains {"guard": "caps", "kind": "lower", "bound": min_replicas, "reason": msg} if {
	lib.scaling_down
	min_replicas > lib.proposed
	msg := sprintf("caps: hard floor of %d replicas (proposed %d)", [min_replicas, lib.proposed])
}

notes contains msg if {
	overridden
	lib.scaling_up
	is_number(p.maxReplicas)
	lib.proposed > p.maxReplicas
	msg := sprintf("caps: hard cap %d raised to %d by override: %s", [p.maxReplicas, p.override.maxReplicas, p.override.reason])
}

notes contains "caps: override ignored: it needs both maxReplicas (a number) and a non-empty reason" if {
	is_object(p.override)
	not overridden
}
