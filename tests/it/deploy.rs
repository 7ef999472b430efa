//! What ships: the systemd unit, the Kubernetes example and the Dockerfile, checked by the
//! tools operators run (systemd-analyze, kubernetes-validate) as far as they run offline.

use std::process::Command;

use crate::support::repo;

/// The unit as installed, with `ExecStart` pointing at the binary under test (verify insists
/// that the executable exists).
fn installed_unit(dir: &std::path::Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(repo().join("examples/deploy/s3db-run.service")).unwrap();
    let path = dir.join("s3db-run.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/s3db-run", env!("CARGO_BIN_EXE_s3db-run")),
    )
    .unwrap();
    path
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze (the systemd package; scripts/test installs it)")
}

#[test]
fn the_systemd_unit_verifies_and_is_rated_ok_by_systemd_analyze_security() {
    let dir = tempfile::tempdir().unwrap();
    let unit = installed_unit(dir.path());
    let unit = unit.to_str().unwrap();
    let verify = systemd_analyze(&["verify", unit]);
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // The threshold is the exposure level times ten: fail above 2.0 ("OK" is below 4).
    let security = systemd_analyze(&["security", "--offline=true", "--threshold=20", unit]);
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(security.status.success(), "{report}");
    let unit_text = std::fs::read_to_string(unit).unwrap();
    for needed in [
        "DynamicUser=yes",
        "StateDirectory=s3db-run",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit_text.contains(needed), "{needed}");
    }
}

fn kubernetes_documents() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(repo().join("examples/deploy/kubernetes.yaml")).unwrap();
    text.split("\n---\n")
        .map(|doc| {
            // moto's virtualenv has PyYAML (moto needs it).
            let python = Command::new(repo().join(".venv/bin/python"))
                .args([
                    "-c",
                    "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn();
            let mut child = python.expect(".venv/bin/python (scripts/test makes it)");
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), doc.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "PyYAML reads the example");
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect()
}

#[test]
fn the_kubernetes_example_passes_kubernetes_validate_strict() {
    crate::support::venv_tool_passes(
        "kubernetes-validate",
        [
            std::ffi::OsStr::new("--strict"),
            std::ffi::OsStr::new("--quiet"),
            repo().join("examples/deploy/kubernetes.yaml").as_os_str(),
        ],
    );
}

/// The Dockerfile cannot be built here (no container daemon, no registry); hadolint checks it
/// as a reviewer would (pinned base images, no root, shell pitfalls in RUN lines).
#[test]
fn the_dockerfile_passes_hadolint() {
    crate::support::venv_tool_passes(
        "hadolint",
        [
            std::ffi::OsStr::new("--failure-threshold"),
            std::ffi::OsStr::new("info"),
            repo().join("Dockerfile").as_os_str(),
        ],
    );
}

#[test]
fn the_kubernetes_example_runs_the_dockerfile_s_image_locked_down() {
    let docs = kubernetes_documents();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("a {k}"))
    };
    let deployment = kind("Deployment");
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        format!(
            "registry.example.com/s3db-run:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    // The pod runs as the Dockerfile's user, unprivileged and read-only.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage names its user");
    let uid: u64 = user.split(':').next().unwrap().parse().unwrap();
    assert_ne!(uid, 0);
    assert!(dockerfile.matches("\nFROM ").count() >= 2, "multi-stage");
    assert!(dockerfile.contains("cargo build --release --locked"));
    let security = &pod["spec"]["securityContext"];
    assert_eq!(security["runAsUser"], uid);
    assert_eq!(security["runAsNonRoot"], true);
    let hardening = &container["securityContext"];
    assert_eq!(hardening["allowPrivilegeEscalation"], false);
    assert_eq!(hardening["readOnlyRootFilesystem"], true);
    assert_eq!(hardening["capabilities"]["drop"][0], "ALL");
    // Every secret the container reads is in the Secret; the Service reaches the API port.
    let secret = kind("Secret");
    for env in container["env"].as_array().unwrap() {
        let key = env["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap();
        assert!(secret["stringData"][key].is_string(), "{key}");
    }
    assert_eq!(kind("Service")["spec"]["ports"][0]["targetPort"], "api");
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "7070");
}
