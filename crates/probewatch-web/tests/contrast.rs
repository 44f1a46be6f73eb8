//! The dashboard's colours meet WCAG 2 AA contrast (4.5:1 for text) against the page
//! background, in the light and the dark theme: read from the real stylesheet, so changing
//! a colour there is checked here.

const CSS: &str = include_str!("../static/app.css");

/// The custom properties of the first `:root { … }` block after `from`.
fn vars(from: usize) -> Vec<(String, String)> {
    let start = CSS[from..]
        .find(":root {")
        .map(|i| from + i)
        .expect(":root block");
    let end = CSS[start..]
        .find('}')
        .map(|i| start + i)
        .expect("block end");
    CSS[start + ":root {".len()..end]
        .split(';')
        .filter_map(|decl| {
            let (name, value) = decl.split_once(':')?;
            let name = name.trim();
            name.starts_with("--")
                .then(|| (name.to_string(), value.trim().to_string()))
        })
        .collect()
}

fn rgb(hex: &str) -> [f64; 3] {
    let hex = hex.trim_start_matches('#');
    assert_eq!(hex.len(), 6, "colour {hex} is not #rrggbb");
    let c = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex") as f64 / 255.0;
    [c(0), c(2), c(4)]
}

fn luminance(hex: &str) -> f64 {
    let lin = |c: f64| {
        if c <= 0.03928 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let [r, g, b] = rgb(hex);
    0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
}

fn contrast(a: &str, b: &str) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

#[test]
fn text_colours_have_aa_contrast_in_both_themes() {
    let dark_at = CSS.find("prefers-color-scheme: dark").expect("dark theme");
    for (theme, from) in [("light", 0), ("dark", dark_at)] {
        let vars = vars(from);
        let get = |name: &str| {
            vars.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{theme} theme lacks {name}"))
        };
        let bg = get("--bg");
        for name in [
            "--fg",
            "--muted",
            "--link",
            "--ok",
            "--warning",
            "--critical",
            "--unknown",
            "--stale",
        ] {
            let ratio = contrast(&get(name), &bg);
            assert!(
                ratio >= 4.5,
                "{theme} theme: {name} {} on {bg} has contrast {ratio:.2}, below 4.5",
                get(name)
            );
        }
    }
}

#[test]
fn the_contrast_formula_matches_wcag_reference_values() {
    assert!((contrast("#000000", "#ffffff") - 21.0).abs() < 1e-9);
    assert!((contrast("#777777", "#ffffff") - 4.48).abs() < 0.01);
}
