//! Charts drawn on the server as SVG markup: readable without JavaScript, nothing loaded from
//! elsewhere.

use tessera_types::format::thousands;

use crate::api::usage::ChartSeries;

fn escape_xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Colours of the stacked series, in order.
pub const CHART_COLOURS: [&str; 8] = [
    "#0f766e", "#2563eb", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#65a30d", "#6b7280",
];

/// A stacked bar chart of `series` over `days` days, as SVG markup (drawn on the server, no
/// script and nothing loaded from elsewhere). Each bar has a tooltip with its numbers.
pub fn stacked_bars_svg(series: &[ChartSeries], days: u32, label: &str) -> String {
    let (w, h, left, bottom) = (640.0_f64, 180.0_f64, 44.0_f64, 20.0_f64);
    let totals: Vec<i64> = (0..days as usize)
        .map(|d| {
            series
                .iter()
                .map(|s| s.values.get(d).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1) as f64;
    let slot = (w - left) / days.max(1) as f64;
    let bar = (slot * 0.7).max(1.0);
    let plot_h = h - bottom - 8.0;
    let mut out = format!(
        "<svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" class=\"bars\">",
        escape_xml(label)
    );
    out.push_str(&format!(
        "<text x=\"0\" y=\"12\" class=\"axis\">{}</text><line x1=\"{left}\" y1=\"{}\" x2=\"{w}\" y2=\"{}\" class=\"base\"/>",
        thousands(max as i64),
        h - bottom,
        h - bottom
    ));
    for d in 0..days as usize {
        let x = left + d as f64 * slot + (slot - bar) / 2.0;
        let mut y = h - bottom;
        for (i, s) in series.iter().enumerate() {
            let v = s.values.get(d).copied().unwrap_or(0);
            if v <= 0 {
                continue;
            }
            let bh = (v as f64 / max * plot_h).max(1.0);
            y -= bh;
            out.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>Day {}: {} — {} tokens</title></rect>",
                CHART_COLOURS[i % CHART_COLOURS.len()],
                d + 1,
                escape_xml(&s.name),
                thousands(v)
            ));
        }
        if d == 0 || (d + 1) % 5 == 0 {
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" class=\"axis\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                h - 4.0,
                d + 1
            ));
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod chart_tests {
    use super::*;

    #[test]
    fn charts_escape_names_and_scale_to_the_largest_day() {
        let series = vec![
            ChartSeries {
                name: "<script>x</script>".into(),
                values: vec![10, 0, 30],
            },
            ChartSeries {
                name: "gpt-4o".into(),
                values: vec![10, 5, 0],
            },
        ];
        let svg = stacked_bars_svg(&series, 3, "Tokens per day");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains("Day 3: &lt;script&gt;x&lt;/script&gt; — 30 tokens"));
    }
}
