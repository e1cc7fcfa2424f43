//! Minimal SVG charts (no plotting dependency): grouped bars and line series.

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// Horizontal bars: one row per label, one bar per series (e.g. ADD, DEL), with a p90 tick.
pub fn bars(
    title: &str,
    unit: &str,
    labels: &[String],
    series: &[(&str, Vec<(f64, f64)>)],
) -> String {
    let row_h = 14.0 * series.len() as f64 + 10.0;
    let (left, width) = (250.0, 560.0);
    let height = 60.0 + row_h * labels.len() as f64 + 30.0;
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|(_, p90)| *p90))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let x = |v: f64| left + width * v / max;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="11">"#,
        left + width + 40.0
    );
    s += &format!(
        r#"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#,
        esc(title)
    );
    for (i, l) in labels.iter().enumerate() {
        let y0 = 40.0 + row_h * i as f64;
        s += &format!(
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y0 + row_h / 2.0,
            esc(l)
        );
        for (j, (_, vals)) in series.iter().enumerate() {
            let (m, p90) = vals[i];
            if !m.is_finite() {
                continue;
            }
            let y = y0 + 14.0 * j as f64;
            s += &format!(
                r#"<rect x="{left}" y="{y}" width="{}" height="11" fill="{}"/>"#,
                (x(m) - left).max(0.5),
                COLORS[j % 8]
            );
            s += &format!(
                r#"<line x1="{0}" x2="{0}" y1="{y}" y2="{1}" stroke="black"/>"#,
                x(p90),
                y + 11.0
            );
            s += &format!(
                r#"<text x="{}" y="{}">{m:.2}</text>"#,
                x(p90) + 4.0,
                y + 10.0
            );
        }
    }
    let yb = 40.0 + row_h * labels.len() as f64 + 5.0;
    s += &format!(
        r#"<line x1="{left}" x2="{}" y1="{yb}" y2="{yb}" stroke="black"/>"#,
        left + width
    );
    s += &format!(
        r#"<text x="{}" y="{}" text-anchor="end">{} (bar: median, tick: p90)</text>"#,
        left + width,
        yb + 15.0,
        esc(unit)
    );
    for (j, (name, _)) in series.iter().enumerate() {
        s += &format!(
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            10.0 + 90.0 * j as f64,
            yb + 8.0,
            COLORS[j % 8],
            24.0 + 90.0 * j as f64,
            yb + 17.0,
            esc(name)
        );
    }
    s + "</svg>\n"
}

/// Line series over x; y from 0.
pub fn lines(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> String {
    let (left, top, w, h) = (60.0, 40.0, 600.0, 300.0);
    let xmax = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.0))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let ymax = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    let px = |x: f64| left + w * x / xmax;
    let py = |y: f64| top + h - h * y / ymax;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#,
        left + w + 200.0,
        top + h + 50.0
    );
    s += &format!(
        r#"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#,
        esc(title)
    );
    s += &format!(
        r#"<line x1="{left}" x2="{left}" y1="{top}" y2="{}" stroke="black"/><line x1="{left}" x2="{}" y1="{}" y2="{}" stroke="black"/>"#,
        top + h,
        left + w,
        top + h,
        top + h
    );
    for k in 0..=4 {
        let yv = ymax * k as f64 / 4.0;
        s += &format!(
            r#"<text x="{}" y="{}" text-anchor="end">{yv:.2}</text>"#,
            left - 4.0,
            py(yv) + 4.0
        );
        let xv = xmax * k as f64 / 4.0;
        s += &format!(
            r#"<text x="{}" y="{}" text-anchor="middle">{xv:.0}</text>"#,
            px(xv),
            top + h + 15.0
        );
    }
    s += &format!(
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + w / 2.0,
        top + h + 35.0,
        esc(xlabel)
    );
    s += &format!(
        r#"<text x="12" y="{}" transform="rotate(-90 12 {})" text-anchor="middle">{}</text>"#,
        top + h / 2.0,
        top + h / 2.0,
        esc(ylabel)
    );
    for (j, (name, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        s += &format!(
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            COLORS[j % 8],
            path.join(" ")
        );
        s += &format!(
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            left + w + 15.0,
            top + 16.0 * j as f64,
            COLORS[j % 8],
            left + w + 30.0,
            top + 9.0 + 16.0 * j as f64,
            esc(name)
        );
    }
    s + "</svg>\n"
}
