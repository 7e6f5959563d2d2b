//! Plain-text tables for the benchmarks: columns as wide as their widest
//! cell, two spaces apart, the first `left` columns left-aligned and the
//! rest right-aligned (numbers).

/// `header` and `rows` as lines of text, each ending in a newline.
pub fn render<R: AsRef<[String]>>(header: &[&str], rows: &[R], left: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.as_ref()) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = cells
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| match i < left {
                true => format!("{c:<w$}"),
                false => format!("{c:>w$}"),
            })
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.as_ref().iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_fit_their_widest_cell_and_align_by_kind() {
        let rows = vec![
            vec!["uniform".to_string(), "1.05".to_string()],
            vec!["slow-host".to_string(), "12.50".to_string()],
        ];
        assert_eq!(
            super::render(&["scenario", "x"], &rows, 1),
            "scenario       x\nuniform     1.05\nslow-host  12.50\n"
        );
    }
}
