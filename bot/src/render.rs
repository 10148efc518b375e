//! Block Kit with Slack's limits enforced (slack-morphism does not check them), and the plain-text
//! fallback every message carries.

use slack_morphism::prelude::*;

pub const MAX_BLOCKS: usize = 50;
pub const MAX_SECTION: usize = 3_000;
pub const MAX_FIELDS: usize = 10;
pub const MAX_FIELD: usize = 2_000;
pub const MAX_HEADER: usize = 150;
pub const MAX_BUTTON: usize = 75;
/// Slack truncates longer notification text; keep the fallback readable.
pub const MAX_TEXT: usize = 3_000;

/// A message: blocks for people, `text` for notifications and clients without blocks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    pub text: String,
    pub blocks: Vec<SlackBlock>,
}

impl Message {
    pub fn content(&self) -> SlackMessageContent {
        SlackMessageContent::new().with_text(self.text.clone()).with_blocks(self.blocks.clone())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"text": self.text, "blocks": self.blocks})
    }
}

/// Builds a message block by block; the fallback text is written alongside.
#[derive(Default)]
pub struct Builder {
    blocks: Vec<SlackBlock>,
    text: Vec<String>,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    pub fn header(mut self, title: &str) -> Builder {
        self.text.push(title.to_string());
        self.blocks.push(SlackHeaderBlock::new(pt!(clip(title, MAX_HEADER))).into());
        self
    }

    /// A mrkdwn section; `plain` is its fallback line (none: the section's text).
    pub fn section(mut self, markdown: &str) -> Builder {
        self.text.push(markdown.to_string());
        self.blocks.push(SlackSectionBlock::new().with_text(md!(clip(markdown, MAX_SECTION))).into());
        self
    }

    /// Label/value pairs side by side (at most 10 per section: more start a new section).
    pub fn fields(mut self, pairs: &[(String, String)]) -> Builder {
        for chunk in pairs.chunks(MAX_FIELDS) {
            let fields: Vec<SlackBlockText> =
                chunk.iter().map(|(k, v)| md!(clip(&format!("*{k}*\n{v}"), MAX_FIELD))).collect();
            self.blocks.push(SlackSectionBlock::new().with_fields(fields).into());
        }
        self.text.extend(pairs.iter().map(|(k, v)| format!("{k}: {v}")));
        self
    }

    /// A code block (monospace table); long tables are clipped to the section limit by whole lines.
    pub fn table(self, lines: &[String]) -> Builder {
        let mut body = String::new();
        let mut shown = 0;
        for line in lines {
            let line = escape(line);
            if body.len() + line.len() + 8 > MAX_SECTION {
                break;
            }
            body.push_str(&line);
            body.push('\n');
            shown += 1;
        }
        let builder = self.section(&format!("```{body}```"));
        if shown < lines.len() {
            builder.context(&format!("{} more rows not shown", lines.len() - shown))
        } else {
            builder
        }
    }

    pub fn context(mut self, markdown: &str) -> Builder {
        self.text.push(markdown.to_string());
        let element = SlackContextBlockElement::MarkDown(SlackBlockMarkDownText::new(clip(markdown, MAX_SECTION)));
        self.blocks.push(SlackContextBlock::new(vec![element]).into());
        self
    }

    pub fn divider(mut self) -> Builder {
        self.blocks.push(SlackDividerBlock::new().into());
        self
    }

    /// Buttons: `(action_id, label, value, style)`.
    pub fn buttons(mut self, buttons: &[(&str, &str, String, Option<SlackBlockButtonStyle>)]) -> Builder {
        let elements = buttons
            .iter()
            .map(|(action, label, value, style)| {
                let mut b = SlackBlockButtonElement::new(pt!(clip(label, MAX_BUTTON)))
                    .with_action_id(action.to_string().into())
                    .with_value(value.clone());
                b.style = style.clone();
                SlackActionBlockElement::Button(b)
            })
            .collect();
        self.blocks.push(SlackActionsBlock::new(elements).into());
        self
    }

    pub fn build(mut self) -> Message {
        if self.blocks.len() > MAX_BLOCKS {
            let hidden = self.blocks.len() - (MAX_BLOCKS - 1);
            self.blocks.truncate(MAX_BLOCKS - 1);
            let note = format!("{hidden} more blocks not shown");
            let element = SlackContextBlockElement::MarkDown(SlackBlockMarkDownText::new(note));
            self.blocks.push(SlackContextBlock::new(vec![element]).into());
        }
        Message { text: clip(&self.text.join("\n"), MAX_TEXT), blocks: self.blocks }
    }
}

/// Data (pages, user ids, alert keys) as literal mrkdwn text: `<!channel>` or `<https://x|y>` in a
/// clickstream field must not ping a channel or make a link.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Cuts `text` to at most `max` characters (not bytes), marking the cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// `▁▂▃▅▇` for a series of counts (empty for none).
pub fn sparkline(values: &[i64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let Some(max) = values.iter().copied().max().filter(|m| *m > 0) else {
        return values.iter().map(|_| BARS[0]).collect();
    };
    values.iter().map(|v| BARS[((v.max(&0) * 7 + max / 2) / max) as usize]).collect()
}

/// `48.3%`; small shares keep two significant digits (`0.034%`), so a real 1-in-3000 is not "0.0%".
pub fn percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    if p != 0.0 && p.abs() < 0.1 {
        let digits = (1.0 - p.abs().log10().floor()) as usize;
        format!("{p:.digits$}%")
    } else {
        format!("{p:.1}%")
    }
}

/// `1h 5m`, `12m`, `40s`.
pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A UTC time as Slack shows dates to each reader in their own time zone, with a fallback.
pub fn time(ms: i64) -> String {
    let fallback = schema::time::rfc3339(ms);
    format!("<!date^{}^{{date_short_pretty}} {{time}}|{fallback}>", ms.div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced() {
        let long = "x".repeat(5_000);
        let mut b = Builder::new().header(&long);
        for _ in 0..60 {
            b = b.section(&long);
        }
        let m = b.build();
        assert_eq!(m.blocks.len(), MAX_BLOCKS);
        let json = serde_json::to_value(&m.blocks).unwrap();
        assert_eq!(json[0]["text"]["text"].as_str().unwrap().chars().count(), MAX_HEADER);
        assert_eq!(json[1]["text"]["text"].as_str().unwrap().chars().count(), MAX_SECTION);
        assert!(json[49]["elements"][0]["text"].as_str().unwrap().contains("12 more blocks"));
        assert_eq!(m.text.chars().count(), MAX_TEXT);
    }

    #[test]
    fn fields_split_in_tens_and_tables_clip_by_line() {
        let pairs: Vec<(String, String)> = (0..23).map(|i| (format!("k{i}"), i.to_string())).collect();
        let m = Builder::new().fields(&pairs).build();
        assert_eq!(m.blocks.len(), 3);
        let lines: Vec<String> = (0..500).map(|i| format!("row {i:>20}")).collect();
        let m = Builder::new().table(&lines).build();
        let json = serde_json::to_value(&m.blocks).unwrap();
        let text = json[0]["text"]["text"].as_str().unwrap();
        assert!(text.len() <= MAX_SECTION && text.ends_with("\n```"), "{}", text.len());
        assert!(json[1]["elements"][0]["text"].as_str().unwrap().contains("more rows"));
    }

    #[test]
    fn sparkline_scales_to_the_maximum() {
        assert_eq!(sparkline(&[0, 7, 14]), "▁▅█");
        assert_eq!(sparkline(&[0, 0]), "▁▁");
        assert_eq!(duration(3_725_000), "1h 2m");
        assert_eq!((percent(0.4834), percent(0.00034), percent(0.0)), ("48.3%".into(), "0.034%".into(), "0.0%".into()));
    }
}
