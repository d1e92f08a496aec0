# METADATA
# title: chanscale shared helpers
# description: >-
#   The proposal (current -> recommended replicas) and each guard's effective parameters. Parameters are layered
#   so cluster admins set defaults and pools tune them: data.chanscale.config.defaults[guard], then
#   data.chanscale.config.namespaces[ns][guard], then the pool's spec.policy.parameters[guard]. A guard named in
#   data.chanscale.config.locked ignores the pool's parameters (e.g. a namespace budget pools must not raise).
package chanscale.lib

default config := {}

config := data.chanscale.config

current := input.replicas.current

proposed := input.replicas.recommended

scaling_up if proposed > current

scaling_down if proposed < current

namespace := input.pool.metadata.namespace

name := input.pool.metadata.name

locked(guard) if guard in object.get(config, "locked", [])

defaults(guard) := as_object(object.get(config, ["defaults", guard], {}))

namespace_params(guard) := as_object(object.get(config, ["namespaces", namespace, guard], {}))

pool_params(guard) := as_object(object.get(input.pool.spec, ["policy", "parameters", guard], {}))

# params(guard) is the guard's effective configuration (later layers win, nested objects merge).
params(guard) := object.union(defaults(guard), namespace_params(guard)) if {
	locked(guard)
} else := object.union(object.union(defaults(guard), namespace_params(guard)), pool_params(guard))

# locked_notes tell a pool that the admin locked a guard it tried to tune, so an ignored override is visible.
locked_notes contains msg if {
	some guard in object.get(config, "locked", [])
	count(pool_params(guard)) > 0
	msg := sprintf("%s: locked by the cluster admin; spec.policy.parameters.%s ignored", [guard, guard])
}

# A non-object parameter value (a typo such as `step: 4`) is ignored rather than breaking every guard.
as_object(x) := x if is_object(x)

else := {}

# num(x) is x when it is a number, else 0: missing replicas of other pools count as none.
num(x) := x if is_number(x)

else := 0

# pct renders a 0..1 ratio as a percentage for reasons.
pct(x) := sprintf("%v%%", [round(x * 1000) / 10])
