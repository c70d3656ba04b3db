# Scope: which namespaces and kinds of object Rootward may act on. kube-system is never touched, whatever the
# settings say, nor Rootward's own namespace (home_namespace: its pods and workload live there, and restarting
# itself would end the verification under way); other protected namespaces and the allowlists come from the
# settings.
package rootward.policy

import rego.v1

touched_namespaces(inp) := {ns | ns := inp.action.target.namespace; is_string(ns); ns != ""} | {ns |
	some ns in object.get(inp, ["blast_radius", "namespaces"], [])
}

scope_denials(inp, s) := (((kube_system | home) | protected) | outside) | kinds if {
	touched := touched_namespaces(inp)
	kube_system := {"kube-system is never acted on" | changes(inp); "kube-system" in touched}
	home := {concat("", ["namespace ", ns, " is Rootward's own: it never acts on itself"]) |
		changes(inp)
		some ns in touched
		ns == object.get(s, "home_namespace", "")
	}
	protected := {concat("", ["namespace ", ns, " is protected"]) |
		changes(inp)
		some ns in touched
		ns != "kube-system"
		ns in s.protected_namespaces
	}
	outside := {sprintf("namespace %s is not in the allowed namespaces", [ns]) |
		count(s.allowed_namespaces) > 0
		some ns in touched
		not ns in s.allowed_namespaces
	}
	kinds := {sprintf("kind %s is not in the allowed kinds", [kind]) |
		kind := inp.action.target.kind
		not kind in s.allowed_kinds
	}
}
