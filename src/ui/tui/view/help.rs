//! `?`: the keys of what is shown (the page, or the window the help was
//! opened over), and on the run page what the timeline and "x peers" mean.

use super::*;

/// Keys every list shares.
const LIST_KEYS: [(&str, &str); 4] = [
    ("PgUp/Dn", "page; Home/g first, End/G last"),
    ("/", "filter (Enter keeps, Esc clears)"),
    ("n N", "next / previous match of the filter"),
    ("mouse", "click selects a row, wheel scrolls"),
];

impl App {
    /// The help's title and lines for what is shown.
    fn help_lines(&self) -> (&'static str, Vec<Line<'static>>) {
        let (title, keys): (&str, Vec<(&str, &str)>) = match (self.help_over(), self.screen) {
            (Some(Overlay::HostDetail(_)), _) => (
                " help: host ",
                vec![
                    ("↑↓", "scroll"),
                    ("PgUp/Dn", "page; Home/g top, End/G bottom"),
                    ("Esc", "back to the run (also q, Enter)"),
                ],
            ),
            (Some(_), _) => (
                " help: version ",
                vec![
                    ("i or /", "type an entity id (Enter also)"),
                    ("Enter", "while typing: look it up in this version"),
                    ("f", "flip or roll back to it (asks: y)"),
                    ("↑↓", "scroll; PgUp/Dn, Home/End page"),
                    ("Esc", "stop typing; again: back to the store"),
                ],
            ),
            (None, Screen::Picker) => (
                " help: jobs ",
                [
                    vec![
                        ("↑↓", "select a job"),
                        ("Enter", "start it"),
                        ("v", "the store's versions"),
                    ],
                    LIST_KEYS.to_vec(),
                    vec![("q", "quit")],
                ]
                .concat(),
            ),
            (None, Screen::Store) => (
                " help: store ",
                [
                    vec![
                        ("↑↓", "select a version"),
                        ("Enter", "open it: report, lookup by id"),
                        ("f", "flip or roll back to it (asks: y)"),
                        ("r", "read the store again"),
                    ],
                    LIST_KEYS.to_vec(),
                    vec![("Esc", "back"), ("q", "quit")],
                ]
                .concat(),
            ),
            (None, Screen::Run) => (
                " help: run ",
                [
                    vec![
                        ("q", "quit (asks while a run goes)"),
                        ("p", "pause / resume new attempts"),
                        ("c", "cancel the run (asks)"),
                        ("s", "backup attempt of the selected chunk"),
                        ("←→ ↑↓", "select a running chunk / scroll"),
                        ("Tab", "focus: timeline, hosts, log"),
                        ("Enter", "on hosts: the selected host"),
                    ],
                    LIST_KEYS.to_vec(),
                    vec![("v", "store versions"), ("Esc", "back to the jobs")],
                ]
                .concat(),
            ),
        };
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let mut lines: Vec<Line> = keys
            .iter()
            .map(|(k, what)| {
                Line::from(vec![
                    Span::styled(format!("{k:>7}  "), bold),
                    Span::raw(*what),
                ])
            })
            .collect();
        if self.screen == Screen::Run && self.help_over().is_none() {
            lines.push(Line::from(""));
            lines.push(Line::styled("timeline", bold));
            for (g, _, what) in glyph_legend() {
                lines.push(Line::from(format!("{g:>7}  {what}")));
            }
            lines.push(Line::from(
                "x peers: an attempt's rows/s over the median running slot's",
            ));
            lines.push(Line::from(
                "  (0.5x: half as fast as the median slot; 1.0x: as fast)",
            ));
            lines.push(Line::from(
                "colour: green as fast as peers, yellow 1.5x, red 3x slower",
            ));
        }
        (title, lines)
    }

    pub(super) fn draw_help(&self, frame: &mut Frame, area: Rect, theme: &Theme) {
        let (title, lines) = self.help_lines();
        let popup = centered(area, 64, lines.len() as u16 + 2);
        self.draw_window(
            frame,
            popup,
            theme,
            title.to_string(),
            " Esc closes ",
            lines,
        );
    }
}
