//! The man pages in docs/man/ are generated from the clap definitions: mape(8) and one page per
//! subcommand (mape-calc(8), …). This test fails when a committed page differs from what the
//! definitions generate; `MAPE_UPDATE_GOLDEN=1 cargo test --test manpage` writes them anew.
#![cfg(feature = "linux")]

use std::path::Path;

fn render(cmd: clap::Command) -> String {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .manual("mape-rs")
        .source(format!("mape-rs {}", env!("CARGO_PKG_VERSION")))
        .render(&mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn man_pages_match_the_command_line() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man");
    let top = mape::cli::command();
    let mut pages = vec![("mape.8".to_string(), render(top.clone()))];
    for sub in top.get_subcommands() {
        let name = format!("mape-{}", sub.get_name());
        let cmd = sub
            .clone()
            .name(&*Box::leak(name.clone().into_boxed_str()))
            .bin_name(format!("mape {}", sub.get_name()));
        pages.push((format!("{name}.8"), render(cmd)));
    }
    let update = std::env::var_os("MAPE_UPDATE_GOLDEN").is_some();
    if update {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut stale = Vec::new();
    for (file, text) in &pages {
        let path = dir.join(file);
        if update {
            std::fs::write(&path, text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(file.clone());
        }
    }
    // No page of a subcommand that is gone.
    for e in std::fs::read_dir(&dir).unwrap() {
        let f = e.unwrap().file_name().into_string().unwrap();
        if f.ends_with(".8") && !pages.iter().any(|(p, _)| *p == f) {
            stale.push(format!("{f} (no such command)"));
        }
    }
    assert!(
        stale.is_empty(),
        "docs/man is stale: {stale:?}; run MAPE_UPDATE_GOLDEN=1 cargo test --test manpage"
    );
    assert!(pages[0].1.contains(".TH mape 8"));
    assert!(pages
        .iter()
        .any(|(f, t)| f == "mape-calc.8" && t.contains("\\-\\-isp")));
}
