//! Tests for files of real size and for the size limits: a concatenated export of tens of
//! thousands of documents loads, a Service with tens of thousands of ports loads, and a file
//! or document past a limit is refused with a diagnostic naming the file, the limit and the
//! flag, while everything else keeps serving.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use super::*;
use meshpilot_model::{Body, InputLimit, Kind};

/// `services` Services, each with `pods_per_service` Pods, as one multi-document stream.
fn export(services: usize, pods_per_service: usize) -> String {
    let mut text = String::new();
    for s in 0..services {
        let _ = write!(
            text,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{s}\n  namespace: ns-{ns}\n  labels: {{app: svc-{s}}}\nspec:\n  selector: {{app: svc-{s}}}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n",
            ns = s % 50
        );
        for p in 0..pods_per_service {
            let _ = write!(
                text,
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: svc-{s}-{p}\n  namespace: ns-{ns}\n  labels: {{app: svc-{s}, version: v1}}\nspec:\n  containers: [{{name: app, image: app}}]\nstatus:\n  phase: Running\n  podIP: 10.{a}.{b}.{c}\n  conditions: [{{type: Ready, status: \"True\"}}]\n",
                ns = s % 50,
                a = s / 256,
                b = s % 256,
                c = p + 1
            );
        }
    }
    text
}

fn names(objects: &[Object]) -> Vec<String> {
    objects.iter().map(|o| o.key().to_string()).collect()
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: 80, name: http}}]}}\n"
    )
}

fn count(objects: &[Object], kind: Kind) -> usize {
    objects.iter().filter(|o| o.key().kind == kind).count()
}

#[test]
fn a_file_of_twenty_thousand_documents_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 2,000 Services with 9 Pods each: 20,000 documents, about 4 MB.
    fs::write(dir.path().join("export.yaml"), export(2_000, 9)).expect("write");
    let (objects, errors) = load_dirs(&[dir.path().to_path_buf()]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(count(&objects, Kind::Service), 2_000);
    assert_eq!(count(&objects, Kind::Pod), 18_000);
}

#[test]
fn a_service_with_seventy_thousand_ports_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text =
        String::from("apiVersion: v1\nkind: Service\nmetadata: {name: wide}\nspec:\n  ports:\n");
    // Port numbers stop at 65,535: the same number over TCP and UDP makes two ports.
    for i in 0..70_000 {
        let (port, protocol) = (i % 35_000 + 1, if i < 35_000 { "TCP" } else { "UDP" });
        let _ = writeln!(
            text,
            "  - name: p{i}\n    port: {port}\n    targetPort: {port}\n    protocol: {protocol}"
        );
    }
    fs::write(dir.path().join("wide.yaml"), text).expect("write");
    let (objects, errors) = load_dirs(&[dir.path().to_path_buf()]);
    assert!(errors.is_empty(), "{errors:?}");
    let ports = objects
        .iter()
        .find_map(|o| match &o.body {
            Body::Service(s) => Some(s.ports.len()),
            _ => None,
        })
        .expect("the Service loads");
    // The UDP half is parsed and converted, then left out as the mesh proxies no UDP.
    assert_eq!(ports, 35_000);
}

/// The one error of `errors`, which must be about `limit`, from `file`, naming the flag.
fn limit_error<'a>(errors: &'a [Diagnostic], file: &Path, limit: InputLimit) -> &'a Diagnostic {
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(e.origin, Origin::File(file.display().to_string()));
    assert_eq!(e.limit.map(|l| l.limit), Some(limit), "{e}");
    assert!(e.message.contains(limit.flag()), "{e}");
    assert!(e.message.contains(limit.env()), "{e}");
    e
}

#[test]
fn a_file_past_the_document_limit_keeps_its_previous_objects_and_others_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.yaml");
    let other = dir.path().join("other.yaml");
    fs::write(&big, format!("{}---\n{}", service("a"), service("b"))).expect("write");
    fs::write(&other, service("c")).expect("write");
    let limits = InputLimits {
        max_documents_per_file: 2,
        ..InputLimits::default()
    };
    let mut loader = Loader::with_limits(vec![dir.path().to_path_buf()], limits);
    let (objects, errors) = loader.load();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(objects.len(), 3);

    // A third document: the file is refused whole, its two objects keep serving.
    fs::write(
        &big,
        format!("{}---\n{}---\n{}", service("a"), service("b"), service("d")),
    )
    .expect("write");
    let (objects, errors) = loader.load();
    let e = limit_error(&errors, &big, InputLimit::DocumentsPerFile);
    assert!(
        e.message.contains("limit of 2 YAML documents per file"),
        "{e}"
    );
    assert!(e.message.contains("3 documents"), "{e}");
    assert!(e.to_string().contains("big.yaml"), "{e}");
    assert_eq!(
        names(&objects),
        [
            "Service default/a",
            "Service default/b",
            "Service default/c"
        ]
    );
}

#[test]
fn a_file_past_the_byte_limit_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.yaml");
    fs::write(&path, service("a")).expect("write");
    let limits = InputLimits {
        max_file_bytes: 10,
        ..InputLimits::default()
    };
    let (objects, errors) = Loader::with_limits(vec![dir.path().to_path_buf()], limits).load();
    assert!(objects.is_empty());
    let e = limit_error(&errors, &path, InputLimit::FileBytes);
    assert!(e.message.contains("limit of 10 bytes per file"), "{e}");
}

#[test]
fn a_document_past_the_node_limit_costs_only_that_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mixed.yaml");
    fs::write(&path, format!("{}---\n{}", service("a"), service("b"))).expect("write");
    let limits = InputLimits {
        max_nodes_per_document: 40,
        ..InputLimits::default()
    };
    let mut loader = Loader::with_limits(vec![dir.path().to_path_buf()], limits);
    let (objects, errors) = loader.load();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(objects.len(), 2);

    // `a` grows past the limit and `c` is added after it: `c` loads, `a` keeps its
    // previous version, `b` is unaffected.
    let mut wide =
        String::from("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports:\n");
    for port in 1..=20 {
        let _ = writeln!(wide, "  - {{name: p{port}, port: {port}}}");
    }
    fs::write(
        &path,
        format!("{wide}---\n{}---\n{}", service("b"), service("c")),
    )
    .expect("write");
    let (objects, errors) = loader.load();
    let e = limit_error(&errors, &path, InputLimit::NodesPerDocument);
    assert!(e.message.contains("document 1 (line 1)"), "{e}");
    assert!(
        e.message.contains("limit of 40 YAML nodes per document"),
        "{e}"
    );
    assert_eq!(
        names(&objects),
        [
            "Service default/a",
            "Service default/b",
            "Service default/c"
        ]
    );
    let a_ports = objects
        .iter()
        .find_map(|o| match &o.body {
            Body::Service(s) if o.meta.name == "a" => Some(s.ports.len()),
            _ => None,
        })
        .expect("a serves");
    assert_eq!(a_ports, 1, "the previous good version of `a` serves");
}

#[test]
fn an_alias_bomb_and_absurd_nesting_are_refused_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Each level doubles: ten levels of ten aliases expand to 10^10 nodes.
    let mut bomb = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n  l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for level in 1..10 {
        let p = level - 1;
        let _ = writeln!(
            bomb,
            "  l{level}: &l{level} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]"
        );
    }
    let bomb_path = dir.path().join("bomb.yaml");
    fs::write(&bomb_path, bomb).expect("write");
    let deep_path = dir.path().join("deep.yaml");
    fs::write(
        &deep_path,
        format!(
            "{}---\n{}{}\n",
            service("a"),
            "[".repeat(200),
            "]".repeat(200)
        ),
    )
    .expect("write");
    let (objects, mut errors) = load_dirs(&[dir.path().to_path_buf()]);
    assert_eq!(names(&objects), ["Service default/a"]);
    errors.sort_by(|a, b| a.origin.cmp(&b.origin));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        errors[0].origin,
        Origin::File(bomb_path.display().to_string())
    );
    assert!(errors[0].limit.is_some(), "{}", errors[0]);
    assert_eq!(
        errors[1].origin,
        Origin::File(deep_path.display().to_string())
    );
    assert_eq!(
        errors[1].limit.map(|l| l.limit),
        Some(InputLimit::NestingDepth),
        "{}",
        errors[1]
    );
}

#[test]
fn the_deepest_nesting_allowed_parses() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(
        dir.path().join("deep.yaml"),
        format!("{}x{}\n", "[".repeat(63), "]".repeat(63)),
    )
    .expect("write");
    let limits = InputLimits {
        max_depth: 64,
        ..InputLimits::default()
    };
    let (_, errors) = Loader::with_limits(vec![dir.path().to_path_buf()], limits).load();
    // Parsed (no stack overflow); the document is no Kubernetes object.
    assert!(errors.iter().all(|e| e.limit.is_none()), "{errors:?}");
}

#[test]
fn yaml_errors_name_the_line_in_the_file_not_in_the_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    fs::write(
        &path,
        format!(
            "{}---\n{}---\nkind: [unclosed\n",
            service("a"),
            service("b")
        ),
    )
    .expect("write");
    let (_, errors) = load_dirs(&[dir.path().to_path_buf()]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].message.starts_with("invalid YAML at line 11,"),
        "{}",
        errors[0]
    );
}

#[test]
fn document_markers_inside_content_do_not_split_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An indented `---` inside a block scalar is content, not a marker.
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  x: |\n    ---\n    y\n---\n";
    fs::write(dir.path().join("c.yaml"), format!("{text}{}", service("a"))).expect("write");
    let (objects, errors) = load_dirs(&[dir.path().to_path_buf()]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(names(&objects), ["Service default/a"]);
}
