//! Column-aligned text tables, Docker style (two spaces or more between columns).

pub fn print(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                // Padded by hand: format!'s width is limited (a 64 KiB name would panic).
                s.push_str(c);
                s.extend(std::iter::repeat_n(
                    ' ',
                    widths[i].saturating_sub(c.len()) + 3,
                ));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_huge_cell_does_not_panic() {
        // format!'s width argument is limited; a 70,000-character name once panicked here.
        let name = "n".repeat(70_000);
        super::print(&["NAME", "DRIVER"], &[vec![name, "macvlan".into()]]);
    }
}
