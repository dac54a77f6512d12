//! A tiny text-table renderer: left-aligned columns separated by two spaces, a header
//! row, no borders. Widths count characters, so names with accents line up too.

/// Renders `rows` under `headers`. Short rows are padded with empty cells; trailing
/// spaces are trimmed from every line. An empty `rows` still prints the header.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers
        .len()
        .max(rows.iter().map(Vec::len).max().unwrap_or(0));
    let mut widths = vec![0usize; columns];
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = row.get(i).map_or("", String::as_str);
            line.push_str(cell);
            if i + 1 < columns {
                let pad = width - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_lines_are_trimmed() {
        let rows = vec![
            vec!["w-0".into(), "127.0.0.1:9000".into(), "active".into()],
            vec!["worker-long".into(), "h:1".into(), String::new()],
            vec!["é".into()],
        ];
        let text = render(&["ID", "ADDRESS", "STATE"], &rows);
        assert_eq!(
            text,
            "ID           ADDRESS         STATE\n\
             w-0          127.0.0.1:9000  active\n\
             worker-long  h:1\n\
             é\n"
        );
        assert_eq!(render(&["A", "B"], &[]), "A  B\n");
    }
}
