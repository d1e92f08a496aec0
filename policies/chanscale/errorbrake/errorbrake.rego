# METADATA
# title: error-rate brake
# description: >-
#   While the error rate is above its limit, do not scale up: when messages fail, more workers usually add load
#   to whatever is failing (a database, a downstream API) instead of draining the channel. The limit is
#   maxErrorRate, else the pool's spec.slo.maxErrorRate. Off unless enabled: true. A missing error rate does not
#   brake (missing data is not evidence of failure) but is noted.
package chanscale.errorbrake

import data.chanscale.lib

p := lib.params("errorBrake")

default enabled := false

enabled if p.enabled == true

limit := p.maxErrorRate if is_number(p.maxErrorRate)

else := input.pool.spec.slo.maxErrorRate

denials contains {"guard": "errorBrake", "reason": msg} if {
	enabled
	lib.scaling_up
	rate := input.signals.errorRate
	is_number(rate)
	rate > limit
	msg := sprintf(
		"error-brake: error rate %s is above the %s limit: not scaling up (more workers would add load to what is failing)",
		[lib.pct(rate), lib.pct(limit)],
	)
}

notes contains "error-brake: error rate unknown this tick; brake not applied" if {
	enabled
	lib.scaling_up
	not is_number(input.signals.errorRate)
}

notes contains "error-brake: enabled but no limit set (parameters.errorBrake.maxErrorRate or spec.slo.maxErrorRate); brake not applied" if {
	enabled
	lib.scaling_up
	not limit
}
