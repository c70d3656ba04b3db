# Blast radius: how much of a workload one action may take down at once, replica floor and ceiling, and
# PodDisruptionBudgets with no headroom.
#
# At once, an action may take down max(1, floor(pods x max_pods_fraction)) pods of a workload: one at a time (a
# rolling change's smallest step) whatever its size, more only within the fraction (a max_pods_fraction of 0:
# none). Pods that do not come back (a scale-down) count within the fraction alone: scaling 2 replicas to 1 halves
# the capacity. A drain is judged on each workload on the node. Taking down every pod of a workload at once (a
# single replica restarted, a Recreate rollout) waits for a human.
package rootward.policy

import rego.v1

pods_limit(total, fraction, permanent) := 0 if fraction <= 0

pods_limit(total, fraction, permanent) := floor(total * fraction) if {
	fraction > 0
	permanent
}

pods_limit(total, fraction, permanent) := max([1, floor(total * fraction)]) if {
	fraction > 0
	not permanent
}

scales_down(br) if {
	is_number(br.replicas_before)
	is_number(br.replicas_after)
	br.replicas_after < br.replicas_before
}

# [pods down at once, pods] of each workload the action touches
workload_shares(br) := br.workloads if count(object.get(br, "workloads", [])) > 0

workload_shares(br) := [[br.pods_at_once, br.pods_total]] if count(object.get(br, "workloads", [])) == 0

blast_denials(inp, s) := (too_many | over) | under if {
	br := object.get(inp, "blast_radius", {})
	too_many := {msg |
		changes(inp)
		some share in workload_shares(br)
		down := share[0]
		total := share[1]
		total > 0
		permanent := count({1 | scales_down(br)}) > 0 # true or false, never undefined
		limit := pods_limit(total, s.max_pods_fraction, permanent)
		down > limit
		msg := sprintf("takes down %d of %d pods at once (%d%%), over the %d%% limit (%d at a time)", [
			down, total, round((100 * down) / total), round(100 * s.max_pods_fraction), limit,
		])
	}
	over := {sprintf("%d replicas is over the ceiling of %d", [after, s.max_replicas]) |
		after := br.replicas_after
		is_number(after)
		after > s.max_replicas
	}
	under := {sprintf("%d replicas is under the floor of %d", [after, s.min_replicas]) |
		after := br.replicas_after
		is_number(after)
		after < s.min_replicas
	}
}

blast_approvals(inp) := pdbs | whole if {
	br := object.get(inp, "blast_radius", {})
	pdbs := {sprintf("PodDisruptionBudget %s allows no disruption now", [pdb.name]) |
		changes(inp)
		some pdb in object.get(br, "pdbs", [])
		pdb.disruptions_allowed < 1
	}
	whole := {sprintf("takes down every pod of the workload at once (%d of %d)", [br.pods_at_once, br.pods_total]) |
		changes(inp)
		br.pods_total > 0
		br.pods_at_once >= br.pods_total
	}
}
