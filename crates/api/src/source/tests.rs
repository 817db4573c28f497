use super::*;
use crate::diag::Severity;

fn parse(text: &str) -> Parsed {
    parse_text("test.yaml", text, "default")
}

const GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: edge
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts: [\"*.example.com\"]
  - port:
      number: 443
      name: https
      protocol: HTTPS
    hosts:
    - example.com
    tls:
      mode: SIMPLE
      credentialName: cert
";

#[test]
fn gateway_with_positions() {
    let p = parse(GATEWAY);
    assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
    assert_eq!(p.resources.len(), 1);
    let r = &p.resources[0];
    assert_eq!(r.key(), "Gateway/edge/gw");
    assert_eq!(r.api_version, "networking.istio.io/v1");
    assert_eq!((r.origin.line, r.origin.col), (1, 1));
    let pos = &r.origin.fields;
    assert_eq!(pos.get("spec.servers[1].tls.mode"), Some((22, 7)));
    assert_eq!(pos.get("spec.servers[1]"), Some((15, 5)));
    assert_eq!(pos.get("spec.servers[0].hosts[0]"), Some((14, 13)));
    assert_eq!(pos.get("metadata.name"), Some((4, 3)));
    // A prefix of a recorded path is not that path.
    assert_eq!(pos.get("spec.servers[1].tls.mod"), None);
    assert_eq!(pos.get("spec.servers[10]"), None);
    // A path that is not there locates at its longest known prefix.
    let loc = r.origin.locate("spec.servers[1].tls.mode.nothing");
    assert_eq!((loc.line, loc.col), (22, 7));
    let Spec::Gateway(gw) = &*r.spec else { panic!("not a gateway") };
    assert_eq!(gw.servers.len(), 2);
    assert_eq!(gw.servers[1].port.as_ref().map(|p| p.number), Some(443));
    assert_eq!(gw.selector.get("istio").map(String::as_str), Some("ingressgateway"));
}

#[test]
fn multi_document_with_empty_documents() {
    let text =
        format!("---\n# only a comment\n---\n{GATEWAY}---\n---\n{}...\n", GATEWAY.replace("name: gw", "name: gw2"));
    let p = parse(&text);
    assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
    let keys: Vec<String> = p.resources.iter().map(Resource::key).collect();
    assert_eq!(keys, ["Gateway/edge/gw", "Gateway/edge/gw2"]);
    assert_eq!(p.resources[0].origin.line, 4);
    assert_eq!(p.resources[1].origin.line, 4 + GATEWAY.lines().count() as u32 + 2);
}

#[test]
fn json_input() {
    let text = r#"{
	"apiVersion": "networking.istio.io/v1beta1",
	"kind": "VirtualService",
	"metadata": {"name": "vs"},
	"spec": {
		"hosts": ["a.example.com"],
		"gateways": ["gw"],
		"http": [{"route": [{"destination": {"host": "a"}, "weight": 70},
		                    {"destination": {"host": "b"}, "weight": 30}]}]
	}
}"#;
    let p = parse(text);
    assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
    let r = &p.resources[0];
    assert_eq!(r.key(), "VirtualService/default/vs");
    assert_eq!(r.origin.fields.get("spec.http[0].route[1].weight"), Some((9, 54)));
    let Spec::VirtualService(vs) = &*r.spec else { panic!("not a virtual service") };
    assert_eq!(vs.http[0].route[1].weight, Some(30));
}

#[test]
fn kind_list_items_are_objects() {
    let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata:
    name: dr
  spec:
    host: reviews
    subsets:
    - name: v1
      labels: {version: v1}
- apiVersion: v1
  kind: Secret
  metadata: {name: cert, namespace: istio-system}
  type: kubernetes.io/tls
  stringData:
    tls.crt: abc
    tls.key: def
";
    let p = parse(text);
    assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
    let keys: Vec<String> = p.resources.iter().map(Resource::key).collect();
    assert_eq!(keys, ["DestinationRule/default/dr", "Secret/istio-system/cert"]);
    let dr = &p.resources[0];
    assert_eq!((dr.origin.line, dr.origin.col), (4, 3));
    // Paths are relative to the item.
    assert_eq!(dr.origin.fields.get("spec.subsets[0].name"), Some((11, 7)));
    let Spec::Secret(secret) = &*p.resources[1].spec else { panic!("not a secret") };
    assert_eq!(secret.string_data.get("tls.crt").map(String::as_str), Some("abc"));
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
}

#[test]
fn syntax_error_has_position_and_drops_the_file() {
    let text = format!("{GATEWAY}---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n   bad: indent\n");
    let p = parse(&text);
    assert!(p.resources.is_empty());
    assert_eq!(p.diagnostics.len(), 1, "{:?}", p.diagnostics);
    let d = &p.diagnostics[0];
    assert_eq!((d.code, d.severity, d.resource.as_str()), (code::SYNTAX, Severity::Error, "-"));
    let line = GATEWAY.lines().count() as u32 + 6;
    assert_eq!((d.location.line, d.location.col), (line, 7), "{d}");
    assert!(d.message.contains("mapping values are not allowed"), "{d}");
    assert_eq!(&*d.location.file, "test.yaml");

    let p = parse("a: [1, 2\nb: 3\n");
    assert_eq!(p.diagnostics.len(), 1);
    assert_eq!(p.diagnostics[0].code, code::SYNTAX);
}

#[test]
fn unknown_field_with_hint() {
    let text = GATEWAY.replace("      mode: SIMPLE", "      mdoe: SIMPLE");
    let p = parse(&text);
    assert!(p.resources.is_empty());
    assert_eq!(p.diagnostics.len(), 1, "{:?}", p.diagnostics);
    let d = &p.diagnostics[0];
    assert_eq!(d.code, code::UNKNOWN_FIELD);
    assert_eq!(d.resource, "Gateway/edge/gw");
    assert_eq!(d.message, "unknown field `spec.servers[1].tls.mdoe`; did you mean `mode`?");
    assert_eq!((d.location.line, d.location.col), (22, 7));

    // No hint when nothing is close.
    let text = GATEWAY.replace("      mode: SIMPLE", "      zzzzzzzzzz: SIMPLE");
    let d = &parse(&text).diagnostics[0];
    assert_eq!(d.message, "unknown field `spec.servers[1].tls.zzzzzzzzzz`");

    // Top-level keys too.
    let text = GATEWAY.replace("spec:", "spce:");
    let d = &parse(&text).diagnostics[0];
    assert_eq!((d.code, d.message.as_str()), (code::UNKNOWN_FIELD, "unknown field `spce`; did you mean `spec`?"));
    assert_eq!(d.location.line, 6);
}

#[test]
fn wrong_type_reports_path() {
    let text = GATEWAY.replace("number: 443", "number: x");
    let p = parse(&text);
    assert!(p.resources.is_empty());
    let d = &p.diagnostics[0];
    assert_eq!(d.code, code::BAD_VALUE);
    assert_eq!(d.message, "spec.servers[1].port.number: invalid type: string \"x\", expected u32");
    assert_eq!((d.location.line, d.location.col), (16, 7));

    // Quoted numbers are strings.
    let text = GATEWAY.replace("number: 443", "number: \"443\"");
    assert_eq!(parse(&text).diagnostics[0].code, code::BAD_VALUE);

    // Unknown enum values get a hint too.
    let text = GATEWAY.replace("mode: SIMPLE", "mode: SIMPEL");
    let d = &parse(&text).diagnostics[0];
    assert_eq!(d.code, code::BAD_VALUE);
    assert!(d.message.starts_with("spec.servers[1].tls.mode: unknown variant `SIMPEL`"), "{}", d.message);
    assert!(d.message.ends_with("did you mean `SIMPLE`?"), "{}", d.message);
}

#[test]
fn unsupported_kind_is_a_warning() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec: {replicas: 2}\n---\n{GATEWAY}";
    let text = text.replace("{GATEWAY}", GATEWAY);
    let p = parse(&text);
    assert_eq!(p.resources.len(), 1);
    assert_eq!(p.diagnostics.len(), 1);
    let d = &p.diagnostics[0];
    assert_eq!((d.severity, d.code), (Severity::Warning, code::UNSUPPORTED_KIND));
    assert_eq!(d.resource, "Deployment/default/web");
    assert_eq!(d.message, "unsupported kind `Deployment` (apiVersion apps/v1): skipped");
    assert_eq!((d.location.line, d.location.col), (1, 1));
}

#[test]
fn default_namespace_and_missing_spec() {
    let p = parse_text(
        "f.yaml",
        "apiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata:\n  name: se\n  namespace: \"\"\n",
        "apps",
    );
    assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
    assert_eq!(p.resources[0].key(), "ServiceEntry/apps/se");
    assert_eq!(*p.resources[0].spec, Spec::ServiceEntry(ServiceEntry::default()));
}

#[test]
fn bad_objects() {
    for text in [
        "- a\n- b\n",
        "just a string\n",
        "kind: Gateway\nmetadata: {name: x}\n",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nspec: {}\n",
    ] {
        let p = parse(text);
        assert!(p.resources.is_empty(), "{text}");
        assert_eq!(p.diagnostics.len(), 1, "{text}");
        assert_eq!(p.diagnostics[0].code, code::BAD_OBJECT, "{text}");
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for text in ["[".repeat(100_000), format!("a: {}1{}", "[".repeat(150), "]".repeat(150)), {
        let mut s = String::new();
        for i in 0..200 {
            s.push_str(&" ".repeat(i));
            s.push_str("a:\n");
        }
        s
    }] {
        let p = parse(&text);
        assert!(p.resources.is_empty());
        assert_eq!(p.diagnostics.len(), 1);
        assert_eq!(p.diagnostics[0].code, code::SYNTAX);
    }
    // Depth built through aliases.
    let mut text = String::from("a0: &a0 [x]\n");
    for i in 1..200 {
        text.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
    }
    let p = parse(&text);
    assert_eq!(p.diagnostics.len(), 1);
    assert!(p.diagnostics[0].message.contains("nesting deeper"), "{}", p.diagnostics[0].message);
}

#[test]
fn billion_laughs_is_bounded() {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        let refs = [prev.as_str(); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let p = parse(&text);
    assert_eq!(p.diagnostics.len(), 1);
    assert!(p.diagnostics[0].message.contains("alias"), "{}", p.diagnostics[0].message);

    // Few nodes, but big strings.
    let text = format!("a: &a \"{}\"\nb: [{}]\n", "x".repeat(100_000), ["*a"; 1000].join(", "));
    let p = parse(&text);
    assert_eq!(p.diagnostics.len(), 1);
    assert!(p.diagnostics[0].message.contains("alias"), "{}", p.diagnostics[0].message);
}

#[test]
fn long_deep_paths_stay_bounded() {
    // 90 levels of 1 KB keys over 20 000 leaves: indexing every path would take ~2 GB.
    let mut text = String::from("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n");
    let mut indent = 2;
    for i in 0..90 {
        text.push_str(&format!("{}k{i}{}:\n", " ".repeat(indent), "k".repeat(1000)));
        indent += 1;
    }
    for i in 0..20_000 {
        text.push_str(&format!("{}l{i}: v\n", " ".repeat(indent)));
    }
    let p = parse(&text);
    // Secret data must be a map of strings: one error.
    assert_eq!(p.diagnostics.len(), 1, "{:?}", p.diagnostics);
    assert_eq!(p.diagnostics[0].code, code::BAD_VALUE);
}

#[test]
fn duplicate_keys_are_errors() {
    let text = GATEWAY.replace("  namespace: edge\n", "  namespace: edge\n  name: again\n");
    let p = parse(&text);
    assert!(p.resources.is_empty());
    assert_eq!(p.diagnostics.len(), 1);
    let d = &p.diagnostics[0];
    assert_eq!(d.code, code::SYNTAX);
    assert_eq!((d.location.line, d.location.col), (6, 3));
    assert!(d.message.contains("duplicate key `name`"), "{}", d.message);
}

#[test]
fn anchors_and_merge_keys() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr}
spec:
  host: reviews
  trafficPolicy: &tp
    connectionPool:
      tcp: {maxConnections: 10}
  subsets:
  - name: v1
    labels: &labels {version: v1}
    trafficPolicy: *tp
  - name: v2
    labels:
      <<: *labels
      version: v2
      track: stable
";
    let p = parse(text);
    assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
    let Spec::DestinationRule(dr) = &*p.resources[0].spec else { panic!("not a destination rule") };
    assert_eq!(dr.subsets[0].traffic_policy, dr.traffic_policy);
    assert_eq!(dr.subsets[1].labels.get("version").map(String::as_str), Some("v2"));
    assert_eq!(dr.subsets[1].labels.len(), 2);
}

#[test]
fn scalars_resolve_like_kubernetes() {
    use tree::Value as V;
    let docs = tree::parse_documents(
        "[true, False, ~, null, '', 12, -3, 0x1F, 0o17, 1.5, .5, 1e3, '12', \"true\", yes, on, 1.2.3, .inf, 18446744073709551615, !!str 5, !!int 7]",
    )
    .map_err(|e| e.message)
    .unwrap_or_else(|e| panic!("{e}"));
    let V::Seq(items) = &docs[0].value else { panic!("not a list") };
    let got: Vec<String> = items
        .iter()
        .map(|i| match &i.node.value {
            V::Null => "null".to_string(),
            V::Bool(b) => format!("bool:{b}"),
            V::Number(n) => format!("num:{n}"),
            V::Str(s) => format!("str:{s}"),
            _ => "other".to_string(),
        })
        .collect();
    let want = [
        "bool:true",
        "bool:false",
        "null",
        "null",
        "str:",
        "num:12",
        "num:-3",
        "num:31",
        "num:15",
        "num:1.5",
        "num:0.5",
        "num:1000.0",
        "str:12",
        "str:true",
        "str:yes",
        "str:on",
        "str:1.2.3",
        "str:.inf",
        "num:18446744073709551615",
        "str:5",
        "num:7",
    ];
    assert_eq!(got, want);
}

#[test]
fn flow_scalars_ending_in_colon_read_like_go_yaml() {
    use tree::Value as V;
    let docs = tree::parse_documents("[1.2.3.4, 001:db8::, x:, a:b:, p: 1, q:\n , \"r\":]")
        .map_err(|e| e.message)
        .unwrap_or_else(|e| panic!("{e}"));
    let V::Seq(items) = &docs[0].value else { panic!("not a list") };
    let got: Vec<String> = items
        .iter()
        .map(|i| match &i.node.value {
            V::Str(s) => format!("str:{s}"),
            V::Map(e) => format!("map:{}", e[0].key),
            _ => "other".to_string(),
        })
        .collect();
    assert_eq!(got, ["str:1.2.3.4", "str:001:db8::", "str:x:", "str:a:b:", "map:p", "map:q", "map:r"]);
}

#[test]
fn nulls_mean_unset() {
    let p = parse("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\n  labels:\nspec:\n  hosts: [a]\n  http:\n");
    assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
}

#[test]
fn garbage_never_panics() {
    let samples = [
        "",
        "---",
        "...",
        "\u{feff}",
        ":",
        "- - - -",
        "? ? ?",
        "&a *a",
        "a: *b",
        "{a: 1, a: 2}",
        "[a, b]: c",
        "<<: 5",
        "a: !!binary x",
        "a: !!int x",
        "%YAML 1.2\n---\na: 1",
        "\t",
        "a:\n\t- b",
        "\"\\x\"",
        "'unterminated",
        "a: |\n bad\n  more",
        "*",
        "apiVersion: v1\nkind: List\nitems: 5",
        "apiVersion: v1\nkind: List\nitems: [1, null, {kind: X}]",
        "apiVersion: [v1]\nkind: Gateway",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: 7",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: {x: y}}",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, labels: {a: 1}}",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: [1]",
    ];
    for s in samples {
        let p = parse(s);
        assert!(p.resources.is_empty(), "{s:?}");
    }
    // Every prefix of a real file.
    for end in (0..GATEWAY.len()).filter(|&i| GATEWAY.is_char_boundary(i)) {
        let _ = parse(&GATEWAY[..end]);
    }
}

#[test]
fn did_you_mean_picks_close_names() {
    let names = ["mode", "credentialName", "serverCertificate", "httpsRedirect"];
    assert_eq!(did_you_mean("mdoe", &names), Some("mode"));
    assert_eq!(did_you_mean("credentialname", &names), Some("credentialName"));
    assert_eq!(did_you_mean("credentalName", &names), Some("credentialName"));
    assert_eq!(did_you_mean("httpRedirect", &names), Some("httpsRedirect"));
    assert_eq!(did_you_mean("zzzzzzzzz", &names), None);
    assert_eq!(did_you_mean("x", &[]), None);
}

#[test]
fn metadata_is_lenient() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
  uid: 1234-5678
  creationTimestamp: 2024-01-02T03:04:05Z
  managedFields: [{manager: kubectl}]
  labels: {app: web}
status: {}
";
    let p = parse(text);
    assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
    let m = &p.resources[0].meta;
    assert_eq!(m.creation_timestamp.as_deref(), Some("2024-01-02T03:04:05Z"));
    assert_eq!(m.namespace, "default");

    let d = &parse(&text.replace("app: web", "app: 5")).diagnostics[0];
    assert_eq!((d.code, d.location.line), (code::BAD_VALUE, 8));
    assert!(d.message.starts_with("metadata.labels.app: invalid type: integer `5`"), "{}", d.message);
}

/// Parsing a stream one document at a time gives what parsing it whole gives: the same
/// objects, the same findings, at the same lines and columns.
#[test]
fn documents_parse_alone_as_in_their_stream() {
    let text = format!(
        "# leading comment\n{GATEWAY}---\n# a comment before the object\napiVersion: networking.istio.io/v1\n\
         kind: VirtualService\nmetadata: {{name: vs}}\nspec:\n  hosts: [a.example.com]\n  htttp: []\n\
         --- \napiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  kind: Gateway\n\
         \x20 metadata: {{name: listed}}\n  spec: {{servers: []}}\n---\n---\nkind: VirtualService\n...\n"
    );
    let whole = parse(&text);
    let parts = split_documents(&text).unwrap();
    assert_eq!(parts.iter().map(|(line, _)| *line).collect::<Vec<_>>(), vec![1, 25, 33, 41, 42]);
    let mut pieced = Parsed::default();
    for (first_line, bytes) in parts {
        let p = parse_document("test.yaml", &text[bytes], first_line, text.len(), "default");
        pieced.resources.extend(p.resources);
        pieced.diagnostics.extend(p.diagnostics);
    }
    assert_eq!(pieced, whole);
    assert_eq!(whole.resources.len(), 2);
    // The misspelt field of the second document, at its line in the file.
    assert!(whole.diagnostics.iter().any(|d| d.location.line == 32 && d.message.contains("htttp")), "{whole:?}");
    // A directive belongs to the document after it: such a stream is not split.
    assert!(split_documents("%YAML 1.2\n---\na: 1\n").is_none());
    assert_eq!(split_documents("a: 1\n---x: 2\n").unwrap().len(), 1);
}

#[test]
fn sequence_indexes_are_written_in_decimal() {
    for i in [0usize, 7, 10, 99, 100, 4096, usize::MAX] {
        let mut path = String::from("spec.http");
        super::push_index(&mut path, i);
        assert_eq!(path, format!("spec.http[{i}]"));
    }
}
