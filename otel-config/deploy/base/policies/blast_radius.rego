# Blast radius: how much of a workload one action may take down at once, replica floor and ceiling, and
# PodDisruptionBudgets with no headroom.
package rootward.policy

import rego.v1

blast_denials(inp, s) := (too_many | over) | under if {
	br := object.get(inp, "blast_radius", {})
	too_many := {msg |
		changes(inp)
		br.pods_total > 0
		br.pods_at_once / br.pods_total > s.max_pods_fraction
		msg := sprintf("takes down %d of %d pods at once (%d%%), over the %d%% limit", [
			br.pods_at_once, br.pods_total,
			round((100 * br.pods_at_once) / br.pods_total), round(100 * s.max_pods_fraction),
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

blast_approvals(inp) := {sprintf("PodDisruptionBudget %s allows no disruption now", [pdb.name]) |
	changes(inp)
	some pdb in object.get(inp, ["blast_radius", "pdbs"], [])
	pdb.disruptions_allowed < 1
}
