# Tests of the default bundle: `rootward policy test` runs every test_ rule (make unit runs them too).
# They call the rule functions with a case and the settings (no `with`: see decision.rego); how the sets combine
# into a result is tested from Python (tests/policies/test_engine.py).
package rootward.policy_test

import rego.v1

import data.rootward.policy

settings := data.rootward.settings

set(overrides) := object.union(settings, overrides)

base := {
	"schema": 1,
	"mode": "autonomous",
	"action": {
		"kind": "patch_resources",
		"tier": "medium",
		"read_only": false,
		"target": {"kind": "Deployment", "namespace": "shop", "name": "cart"},
		"target_id": "Deployment/shop/cart",
		"params": {},
	},
	"blast_radius": {
		"pods_total": 5, "pods_affected": 5, "pods_at_once": 1,
		"replicas_before": 5, "replicas_after": 5,
		"namespaces": ["shop"], "pdbs": [], "dependents": [],
	},
	"diagnosis": {"incident_id": "inc-1", "summary": "cart is OOMKilled", "confidence": 0.9},
	"history": {"last_action_on_target_s_ago": null, "actions_last_hour": 0},
	"now": {"unix": 1700000000, "rfc3339": "2023-11-14T22:13:20Z"},
	"approval": null,
}

with_target(ns) := object.union(base, {"action": object.union(base.action, {"target": object.union(base.action.target, {"namespace": ns})}), "blast_radius": object.union(base.blast_radius, {"namespaces": [ns]})})

test_a_confident_medium_action_in_scope_is_neither_denied_nor_held if {
	inp := base
	count(policy.denials(inp, settings)) == 0
	count(policy.approvals(inp, settings)) == 0
}

test_kube_system_is_denied if {
	inp := with_target("kube-system")
	"kube-system is never acted on" in policy.denials(inp, settings)
}

test_kube_system_is_denied_even_when_settings_allow_it if {
	inp := with_target("kube-system")
	"kube-system is never acted on" in policy.denials(inp, set({"protected_namespaces": []}))
}

test_a_protected_namespace_is_denied if {
	inp := with_target("kube-public")
	"namespace kube-public is protected" in policy.denials(inp, settings)
}

test_rootwards_own_namespace_is_denied if {
	inp := with_target("rootward")
	"namespace rootward is Rootward's own: it never acts on itself" in policy.denials(inp, set({"home_namespace": "rootward"}))
}

test_a_drain_that_reaches_rootwards_own_namespace_is_denied if {
	drain := object.union(base.action, {"kind": "drain_node", "tier": "high", "target": {"kind": "Node", "name": "node-a"}, "target_id": "Node/node-a"})
	inp := object.union(base, {"action": drain, "blast_radius": object.union(base.blast_radius, {"namespaces": ["shop", "rootward"]})})
	"namespace rootward is Rootward's own: it never acts on itself" in policy.denials(inp, set({"home_namespace": "rootward"}))
}

test_without_a_home_namespace_nothing_is_denied_for_it if {
	inp := with_target("rootward")
	count(policy.denials(inp, set({"home_namespace": ""}))) == 0
}

test_a_namespace_outside_the_allowlist_is_denied if {
	inp := base
	"namespace shop is not in the allowed namespaces" in policy.denials(inp, set({"allowed_namespaces": ["web"]}))
}

test_more_than_a_fifth_of_the_pods_at_once_is_denied if {
	inp := object.union(base, {"blast_radius": object.union(base.blast_radius, {"pods_at_once": 2})})
	"takes down 2 of 5 pods at once (40%), over the 20% limit (1 at a time)" in policy.denials(inp, settings)
}

with_pods(total, at_once) := object.union(base, {"blast_radius": object.union(
	base.blast_radius,
	{"pods_total": total, "pods_affected": total, "pods_at_once": at_once, "replicas_before": total, "replicas_after": total},
)})

test_one_pod_at_a_time_is_allowed_whatever_the_workloads_size if {
	every total in [2, 3, 4] {
		count(policy.denials(with_pods(total, 1), settings)) == 0
		count(policy.approvals(with_pods(total, 1), settings)) == 0
	}
}

test_a_larger_workload_may_lose_its_fraction_at_once if {
	count(policy.denials(with_pods(10, 2), settings)) == 0
	"takes down 3 of 10 pods at once (30%), over the 20% limit (2 at a time)" in policy.denials(with_pods(10, 3), settings)
}

test_a_fraction_of_zero_allows_no_pod_down if {
	"takes down 1 of 5 pods at once (20%), over the 0% limit (0 at a time)" in policy.denials(base, set({"max_pods_fraction": 0}))
}

test_a_drain_is_judged_on_every_workload_on_the_node if {
	drain := object.union(with_pods(2, 1), {"blast_radius": object.union(with_pods(2, 1).blast_radius, {"workloads": [[1, 2], [4, 10]]})})
	"takes down 4 of 10 pods at once (40%), over the 20% limit (2 at a time)" in policy.denials(drain, settings)
	fine := object.union(with_pods(2, 1), {"blast_radius": object.union(with_pods(2, 1).blast_radius, {"workloads": [[1, 2], [2, 10]]})})
	count(policy.denials(fine, settings)) == 0
}

test_pods_that_do_not_come_back_count_within_the_fraction_alone if {
	down := object.union(with_pods(2, 1), {"blast_radius": object.union(with_pods(2, 1).blast_radius, {"replicas_after": 1})})
	"takes down 1 of 2 pods at once (50%), over the 20% limit (0 at a time)" in policy.denials(down, settings)
	fewer := object.union(with_pods(5, 1), {"blast_radius": object.union(with_pods(5, 1).blast_radius, {"replicas_after": 4})})
	count(policy.denials(fewer, settings)) == 0
}

test_every_pod_of_a_workload_at_once_waits_for_a_human if {
	count(policy.denials(with_pods(1, 1), settings)) == 0
	"takes down every pod of the workload at once (1 of 1)" in policy.approvals(with_pods(1, 1), settings)
}

test_a_cooldown_denies_a_second_action_on_the_same_object if {
	inp := object.union(base, {"history": {"last_action_on_target_s_ago": 60, "actions_last_hour": 1}})
	"cooldown: Deployment/shop/cart was acted on 60 s ago (wait 840 s)" in policy.denials(inp, settings)
}

test_the_rate_limit_denies if {
	inp := object.union(base, {"history": {"last_action_on_target_s_ago": null, "actions_last_hour": 10}})
	"rate limit: 10 actions in the last hour (at most 10)" in policy.denials(inp, settings)
}

test_a_low_confidence_medium_action_needs_approval if {
	inp := object.union(base, {"diagnosis": {"confidence": 0.5}})
	"medium-risk action and the diagnosis confidence 0.5 is under 0.8" in policy.approvals(inp, settings)
}

test_a_high_risk_action_needs_approval if {
	inp := object.union(base, {"action": object.union(base.action, {"tier": "high"})})
	"high-risk action: a human approves" in policy.approvals(inp, settings)
}

test_an_approval_is_noted if {
	inp := object.union(base, {"approval": {"approved_by": "alice"}})
	"approved by alice" in policy.remarks(inp)
}

test_a_freeze_window_denies_changes if {
	inp := base
	windows := [{"start": 1699999000, "end": 1700001000, "end_rfc3339": "2023-11-14T22:30:00Z", "reason": "release"}]
	"change freeze until 2023-11-14T22:30:00Z: release" in policy.denials(inp, set({"freeze_windows": windows}))
}

test_read_only_collection_ignores_cooldowns_and_rate_limits if {
	inp := object.union(base, {
		"action": object.union(base.action, {"kind": "collect", "tier": "low", "read_only": true, "target": {"kind": "Pod", "namespace": "shop", "name": "cart-1"}}),
		"history": {"last_action_on_target_s_ago": 1, "actions_last_hour": 99},
	})
	count(policy.denials(inp, settings)) == 0
	count(policy.approvals(inp, settings)) == 0
}

test_scaling_over_the_ceiling_is_denied if {
	inp := object.union(base, {"blast_radius": object.union(base.blast_radius, {"replicas_after": 51})})
	"51 replicas is over the ceiling of 50" in policy.denials(inp, settings)
}

test_scaling_to_zero_is_denied if {
	inp := object.union(base, {"blast_radius": object.union(base.blast_radius, {"replicas_after": 0, "pods_at_once": 0})})
	"0 replicas is under the floor of 1" in policy.denials(inp, settings)
}

test_a_pdb_without_headroom_needs_approval if {
	inp := object.union(base, {"blast_radius": object.union(base.blast_radius, {"pdbs": [{"name": "cart", "disruptions_allowed": 0}]})})
	"PodDisruptionBudget cart allows no disruption now" in policy.approvals(inp, settings)
}

flag_toggle := object.union(base, {
	"action": {
		"kind": "toggle_flag",
		"tier": "medium",
		"read_only": false,
		"target": {"kind": "FeatureFlag", "namespace": null, "name": "new-checkout"},
		"target_id": "FeatureFlag/new-checkout",
		"params": {"flag": "new-checkout", "variant": "off", "state": null},
	},
	"blast_radius": {
		"pods_total": 0, "pods_affected": 0, "pods_at_once": 0,
		"replicas_before": null, "replicas_after": null,
		"namespaces": [], "pdbs": [], "dependents": [],
		"flag": {
			"key": "new-checkout", "variants": ["off", "on"], "targeting": false,
			"from": {"state": "ENABLED", "defaultVariant": "on"}, "to": {"state": "ENABLED", "defaultVariant": "off"},
		},
	},
})

test_a_confident_flag_toggle_is_neither_denied_nor_held if {
	count(policy.denials(flag_toggle, settings)) == 0
	count(policy.approvals(flag_toggle, settings)) == 0
}

test_a_flag_outside_the_allowed_flags_is_denied if {
	"flag new-checkout is not in the allowed flags" in policy.denials(flag_toggle, set({"allowed_flags": ["dark-mode"]}))
}

test_a_flag_in_the_allowed_flags_is_not_denied if {
	count(policy.denials(flag_toggle, set({"allowed_flags": ["new-checkout"]}))) == 0
}

test_flags_are_denied_when_feature_flags_are_not_an_allowed_kind if {
	"kind FeatureFlag is not in the allowed kinds" in policy.denials(flag_toggle, set({"allowed_kinds": ["Pod"]}))
}

test_a_low_confidence_flag_toggle_needs_approval if {
	inp := object.union(flag_toggle, {"diagnosis": {"confidence": 0.5}})
	"medium-risk action and the diagnosis confidence 0.5 is under 0.8" in policy.approvals(inp, settings)
}

test_a_flag_with_targeting_rules_is_noted if {
	inp := object.union(flag_toggle, {"blast_radius": {"flag": object.union(flag_toggle.blast_radius.flag, {"targeting": true})}})
	"flag new-checkout has targeting rules: only evaluations they do not match get the new default variant" in policy.remarks(inp)
}

test_a_cooldown_applies_to_a_flag_too if {
	inp := object.union(flag_toggle, {"history": {"last_action_on_target_s_ago": 30, "actions_last_hour": 1}})
	"cooldown: FeatureFlag/new-checkout was acted on 30 s ago (wait 870 s)" in policy.denials(inp, settings)
}
