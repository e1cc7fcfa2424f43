//! `mvnet-flame`: a flame graph (SVG) from `perf script` output, with no other tool.
//!
//!     perf script -F comm,pid,tid,ip,sym | mvnet-flame --title T --agent-pid P > flame.svg
//!
//! Stacks are folded root first. Samples of `--agent-pid` (every thread of the resident
//! agent) are put under an "agent" frame and the other processes of `--comm` under
//! "plugin process", so one picture shows where an ADD spends its CPU on both sides of the
//! socket, user and kernel alike. `--per N` labels the total as N operations' worth.

use std::collections::BTreeMap;
use std::io::Read;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Frame name without the offset (`func+0x12` -> `func`) and with Rust hashes cut.
fn clean(sym: &str) -> String {
    let s = sym.split("+0x").next().unwrap_or(sym);
    let s = match s.rfind("::h") {
        Some(i) if s.len() - i == 19 => &s[..i],
        _ => s,
    };
    if s.is_empty() || s == "[unknown]" {
        "[unknown]".into()
    } else {
        s.to_string()
    }
}

#[derive(Default)]
struct Node {
    count: u64,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn add(&mut self, stack: &[String]) {
        self.count += 1;
        if let Some((first, rest)) = stack.split_first() {
            self.children.entry(first.clone()).or_default().add(rest);
        }
    }
    fn depth(&self) -> usize {
        1 + self.children.values().map(Node::depth).max().unwrap_or(0)
    }
}

fn color(name: &str) -> String {
    let mut h: u32 = 2166136261;
    for b in name.bytes() {
        h = (h ^ b as u32).wrapping_mul(16777619);
    }
    let kernel = name.starts_with("[k] ");
    let (r, g, b) = if kernel {
        (200 + (h % 55), 120 + (h / 55 % 60), 40 + (h / 3300 % 40))
    } else {
        (210 + (h % 45), 80 + (h / 45 % 100), 30 + (h / 4500 % 30))
    };
    format!("rgb({r},{g},{b})")
}

struct Svg {
    out: String,
    width: f64,
    total: u64,
    height: f64,
    per: f64,
    ms_per_sample: f64,
}

impl Svg {
    fn frame(&mut self, name: &str, node: &Node, x: f64, depth: usize) {
        let w = self.width * node.count as f64 / self.total as f64;
        if w < 0.3 {
            return;
        }
        let y = self.height - 40.0 - 17.0 * (depth as f64 + 1.0);
        let ms = node.count as f64 * self.ms_per_sample / self.per;
        let pct = 100.0 * node.count as f64 / self.total as f64;
        self.out += &format!(
            r#"<g><title>{} ({:.3} ms per operation, {pct:.1}%)</title><rect x="{:.2}" y="{y:.1}" width="{:.2}" height="16" fill="{}" rx="2"/>"#,
            esc(name),
            ms,
            10.0 + x,
            w,
            color(name)
        );
        let chars = ((w - 6.0) / 6.6) as usize;
        if chars >= 3 {
            let label: String = if name.chars().count() > chars {
                name.chars()
                    .take(chars.saturating_sub(2))
                    .collect::<String>()
                    + ".."
            } else {
                name.to_string()
            };
            self.out += &format!(
                r#"<text x="{:.2}" y="{:.1}">{}</text>"#,
                13.0 + x,
                y + 12.0,
                esc(&label)
            );
        }
        self.out += "</g>";
        let mut cx = x;
        for (child, n) in &node.children {
            self.frame(child, n, cx, depth + 1);
            cx += self.width * n.count as f64 / self.total as f64;
        }
    }
}

fn main() {
    let mut title = String::from("flame graph");
    let mut agent_pid = String::new();
    let mut comm = String::from("mvnet-cni");
    let mut per = 1.0f64;
    let mut hz = 20000.0f64;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i + 1 < args.len() {
        let v = args[i + 1].clone();
        match args[i].as_str() {
            "--title" => title = v,
            "--agent-pid" => agent_pid = v,
            "--comm" => comm = v,
            "--per" => per = v.parse().unwrap_or(1.0),
            "--hz" => hz = v.parse().unwrap_or(20000.0),
            other => {
                eprintln!("mvnet-flame: unknown option {other}");
                std::process::exit(2)
            }
        }
        i += 2;
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .expect("perf script output on stdin");
    let mut root = Node::default();
    for block in text.split("\n\n") {
        let mut lines = block.lines().filter(|l| !l.trim().is_empty());
        let Some(head) = lines.next() else { continue };
        // "comm pid/tid" (comm may hold spaces: the pid/tid is the last field).
        let fields: Vec<&str> = head.split_whitespace().collect();
        let Some(pid_tid) = fields.iter().rev().find(|f| f.contains('/')) else {
            continue;
        };
        let pid = pid_tid.split('/').next().unwrap_or("");
        if !head.starts_with(&comm) {
            continue;
        }
        let side = if pid == agent_pid {
            "agent (resident)"
        } else {
            "plugin process (exec, forward, exit)"
        };
        let mut frames: Vec<String> = lines
            .map(|l| {
                let mut parts = l.split_whitespace();
                let _addr = parts.next();
                let rest: Vec<&str> = parts.collect();
                let sym = rest
                    .iter()
                    .take_while(|p| !p.starts_with('('))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ");
                let kernel = l.contains("[kernel.kallsyms]");
                let name = clean(&sym);
                if kernel {
                    format!("[k] {name}")
                } else {
                    name
                }
            })
            .collect();
        frames.reverse();
        let mut stack = vec![side.to_string()];
        stack.extend(frames);
        root.add(&stack);
    }
    if root.count == 0 {
        eprintln!("mvnet-flame: no samples of {comm}");
        std::process::exit(1)
    }
    let depth = root.depth();
    let width = 1180.0;
    let height = 17.0 * depth as f64 + 80.0;
    let ms_per_sample = 1000.0 / hz;
    let mut svg = Svg {
        out: format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="{height}" font-family="monospace" font-size="11"><rect width="100%" height="100%" fill="#fdfdf8"/><text x="10" y="20" font-size="14" font-family="sans-serif" font-weight="bold">{}</text><text x="10" y="36" font-family="sans-serif">{} samples at {hz:.0} Hz = {:.3} ms of CPU per operation; hover a frame for its share. [k] = kernel.</text>"##,
            esc(&title),
            root.count,
            root.count as f64 * ms_per_sample / per
        ),
        width,
        total: root.count,
        height,
        per,
        ms_per_sample,
    };
    let mut x = 0.0;
    for (name, n) in &root.children {
        svg.frame(name, n, x, 0);
        x += width * n.count as f64 / root.count as f64;
    }
    svg.out += "</svg>\n";
    print!("{}", svg.out);
}
