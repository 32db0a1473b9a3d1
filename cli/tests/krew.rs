//! The krew manifest, `cli/krew/eagle.yaml`, as krew's index validates it: the schema and kind,
//! the four platforms kubectl users run, each with its selector, archive, checksum and binary,
//! and the version of this crate (a release that forgets to bump it is caught here).

use std::collections::BTreeSet;

use eagle_tests::repo_root;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Manifest {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    version: String,
    homepage: String,
    short_description: String,
    description: String,
    caveats: String,
    platforms: Vec<Platform>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Platform {
    selector: Selector,
    uri: String,
    sha256: String,
    files: Vec<FileOperation>,
    bin: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Selector {
    match_labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOperation {
    from: String,
    to: String,
}

#[test]
fn the_krew_manifest_is_valid_for_the_four_platforms() {
    let text = std::fs::read_to_string(repo_root().join("cli/krew/eagle.yaml")).expect("read cli/krew/eagle.yaml");
    let manifest: Manifest = serde_saphyr::from_str(&text).expect("the manifest parses");
    assert_eq!(manifest.api_version, "krew.googlecontainertools.github.com/v1alpha2");
    assert_eq!(manifest.kind, "Plugin");
    assert_eq!(manifest.metadata.name, "eagle", "`kubectl eagle` runs kubectl-eagle");
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest.spec.version, version, "the manifest's version is the crate's");
    assert!(manifest.spec.homepage.starts_with("https://"));
    assert!(!manifest.spec.short_description.is_empty() && manifest.spec.short_description.len() <= 70);
    assert!(!manifest.spec.description.is_empty() && !manifest.spec.caveats.is_empty());

    let mut platforms = BTreeSet::new();
    for p in &manifest.spec.platforms {
        let labels = &p.selector.match_labels;
        let os_arch = (labels.get("os").cloned().unwrap_or_default(), labels.get("arch").cloned().unwrap_or_default());
        assert!(platforms.insert(os_arch.clone()), "{os_arch:?} twice");
        assert!(p.uri.starts_with("https://") && p.uri.ends_with(".tar.gz"), "{}", p.uri);
        assert!(p.uri.contains(&format!("/{version}/")), "{} is not the {version} release", p.uri);
        assert!(
            p.sha256.len() == 64 && p.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "sha256 of {os_arch:?} is 64 lowercase hex digits: {}",
            p.sha256
        );
        assert_eq!(p.bin, "kubectl-eagle");
        let shipped: BTreeSet<&str> = p.files.iter().map(|f| f.from.as_str()).collect();
        for file in ["kubectl-eagle", "kubectl_complete-eagle", "LICENSE"] {
            assert!(shipped.contains(file), "{os_arch:?} ships {file}");
        }
        assert!(p.files.iter().all(|f| f.to == "."), "files go to the plugin's root");
    }
    let want: BTreeSet<(String, String)> =
        [("linux", "amd64"), ("linux", "arm64"), ("darwin", "amd64"), ("darwin", "arm64")]
            .into_iter()
            .map(|(o, a)| (o.to_owned(), a.to_owned()))
            .collect();
    assert_eq!(platforms, want);
    assert!(
        repo_root().join("cli/completion/kubectl_complete-eagle").is_file(),
        "the completion hook the archives ship"
    );
}

/// The LICENSE every archive ships (krew's index requires one) is the license Cargo.toml
/// declares, Apache-2.0, in full.
#[test]
fn the_license_the_archives_ship_is_the_declared_one() {
    let cargo = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("read Cargo.toml");
    assert!(cargo.lines().any(|l| l.trim() == "license = \"Apache-2.0\""), "Cargo.toml declares Apache-2.0");
    let license = std::fs::read_to_string(repo_root().join("LICENSE")).expect("a LICENSE at the repository's root");
    assert!(license.contains("Apache License") && license.contains("Version 2.0, January 2004"));
    assert!(
        license.contains("END OF TERMS AND CONDITIONS") && license.contains("APPENDIX: How to apply"),
        "the whole text"
    );
    let workflow =
        std::fs::read_to_string(repo_root().join(".github/workflows/release.yml")).expect("read release.yml");
    assert!(workflow.contains(" LICENSE \"$name\"/"), "the release archives copy LICENSE");
}
