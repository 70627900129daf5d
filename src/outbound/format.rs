//! Per-platform formatting: turns a SigSentry [`Analysis`] into the native
//! message of each chat platform (Slack, Microsoft Teams, Discord, Google
//! Chat) and into an email (subject, plain text, HTML).
//!
//! This module owns only the *shape and size* of those messages: which
//! fields carry what, how untrusted text is escaped for each platform, and
//! how it is cut to each platform's limits. It does no I/O, holds no state
//! and is synchronous; callers serialise the returned [`serde_json::Value`]
//! (or use the [`Email`] strings) and deliver them.
//!
//! Invariants, for every input (the analysis' strings are untrusted):
//! - nothing here panics: no `unwrap`/`expect` on data, no slicing that is
//!   not on a char boundary, no unchecked indexing;
//! - every message respects the platform limits stated by the `*_MAX`
//!   constants below (each names its source); text too long for a limit is
//!   TRUNCATED on a UTF-8 char boundary and ends with `…` (the ellipsis is
//!   counted within the limit), never rejected;
//! - every message carries the severity (and the severity colour where the
//!   platform has one), the summary, the root cause (service / error type /
//!   category when present), the affected services, the top suggested
//!   actions (by priority, at most [`TOP_ACTIONS`]), the link when it is a
//!   plain `http(s)://` URL, and the project slug and id;
//! - untrusted text cannot mention or notify anyone, or inject markup:
//!   Slack mrkdwn gets `&`, `<`, `>` escaped (so `<!channel>` is inert),
//!   Discord messages carry `allowed_mentions: {"parse": []}`, Google Chat
//!   card text is HTML-escaped and its plain `text` has `<`/`>` replaced,
//!   the HTML email escapes every interpolated value, and the email
//!   subject is a single line (control characters become spaces);
//! - no platform field the platform requires to be non-empty is empty
//!   (blank values are shown as `—`).
//!
//! Lengths are counted in Unicode scalar values (`char`s), which is how
//! Slack, Discord and Google document their character limits; the
//! byte-sized limits (Teams ~28 KB, Google Chat 32,000 bytes) are kept by
//! capping every field well below them (tested with 4-byte characters).

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use super::analysis::{Analysis, Severity};

// ---------------------------------------------------------------------------
// Platform limits (as documented by each platform).

/// Slack header block: `text` at most 150 characters.
/// Source: Slack Block Kit reference, "Header block"
/// (docs.slack.dev/reference/block-kit/blocks/header-block).
pub const SLACK_HEADER_MAX: usize = 150;
/// Slack section block: `text` at most 3000 characters; also the maximum of
/// any text object (used for context elements).
/// Source: Slack Block Kit reference, "Section block" and "Text object".
pub const SLACK_SECTION_TEXT_MAX: usize = 3000;
/// Slack section block: at most 10 `fields`.
/// Source: Slack Block Kit reference, "Section block".
pub const SLACK_FIELDS_MAX: usize = 10;
/// Slack section block: each field's text at most 2000 characters.
/// Source: Slack Block Kit reference, "Section block".
pub const SLACK_FIELD_TEXT_MAX: usize = 2000;
/// Slack message: at most 50 blocks.
/// Source: Slack Block Kit reference, "Blocks" (messages: up to 50 blocks).
pub const SLACK_BLOCKS_MAX: usize = 50;
/// Slack message top-level `text`: truncated by Slack past 40,000
/// characters. Source: Slack API reference, `chat.postMessage`, "Truncating
/// content". We keep the fallback far shorter (`FALLBACK_MAX`).
pub const SLACK_TEXT_MAX: usize = 40_000;
/// Slack button element: `text` at most 75 characters, `url` at most 3000.
/// Source: Slack Block Kit reference, "Button element".
pub const SLACK_BUTTON_TEXT_MAX: usize = 75;
/// See [`SLACK_BUTTON_TEXT_MAX`].
pub const SLACK_BUTTON_URL_MAX: usize = 3000;

/// Microsoft Teams: a message posted by an incoming webhook or a Workflows
/// (Power Automate) flow is limited to about 28 KB in total.
/// Source: Microsoft Learn, "Create Incoming Webhooks" (message size limit
/// 28 KB) and the Microsoft Teams connector reference for Power Automate
/// ("the message size limit is approximately 28 KB").
pub const TEAMS_MESSAGE_BYTES_MAX: usize = 28_000;

/// Discord message `content`: at most 2000 characters.
/// Source: Discord developer docs, "Execute Webhook" / "Create Message".
pub const DISCORD_CONTENT_MAX: usize = 2000;
/// Discord embed limits. Source: Discord developer docs, "Message Resource
/// → Embed Object → Embed Limits": title 256, description 4096, up to 25
/// fields, field name 256, field value 1024, footer text 2048, and the sum
/// of title, description, field names and values, footer text and author
/// name at most 6000 characters.
pub const DISCORD_TITLE_MAX: usize = 256;
/// See [`DISCORD_TITLE_MAX`].
pub const DISCORD_DESCRIPTION_MAX: usize = 4096;
/// See [`DISCORD_TITLE_MAX`].
pub const DISCORD_FIELDS_MAX: usize = 25;
/// See [`DISCORD_TITLE_MAX`].
pub const DISCORD_FIELD_NAME_MAX: usize = 256;
/// See [`DISCORD_TITLE_MAX`].
pub const DISCORD_FIELD_VALUE_MAX: usize = 1024;
/// See [`DISCORD_TITLE_MAX`].
pub const DISCORD_FOOTER_MAX: usize = 2048;
/// See [`DISCORD_TITLE_MAX`].
pub const DISCORD_EMBED_TOTAL_MAX: usize = 6000;

/// Google Chat message `text`: capped at 4096 characters (the hookgate
/// brief's figure for Chat message text; Google's docs state the size limit
/// for the whole message, [`GOOGLE_CHAT_MESSAGE_BYTES_MAX`]).
pub const GOOGLE_CHAT_TEXT_MAX: usize = 4096;
/// Google Chat: a whole message, text and cards, at most 32,000 bytes.
/// Source: Google Chat API guide, "Send a message" ("The maximum message
/// size, including any text or cards, is 32,000 bytes").
pub const GOOGLE_CHAT_MESSAGE_BYTES_MAX: usize = 32_000;

// ---------------------------------------------------------------------------
// Our own caps (well inside the platform limits above).

/// Suggested actions shown, at most (by priority).
pub const TOP_ACTIONS: usize = 3;
/// The email subject's summary part, in characters.
pub const EMAIL_SUBJECT_SUMMARY_MAX: usize = 120;
/// The summary in chat bodies (Teams, Discord, Google Chat, Slack): keeps
/// Teams well under its ~28 KB and Discord under its 6000 total.
const SUMMARY_MAX: usize = 2000;
/// The summary in the email bodies.
const EMAIL_SUMMARY_MAX: usize = 10_000;
/// Work bound: text past this is cut before it is cleaned.
const SCAN_MAX: usize = 20_000;
/// Slack `text` fallback (shown in notifications), Discord `content` and
/// Google Chat `text`.
const FALLBACK_MAX: usize = 300;
/// Titles where the platform has no documented limit (Teams, Google Chat).
const TITLE_MAX: usize = 200;
/// Each root-cause part (service, error type, category).
const ROOT_CAUSE_PART_MAX: usize = 200;
/// The project slug, the project id, the analysis id: each.
const ID_MAX: usize = 100;
/// The timestamp as shown.
const TIMESTAMP_MAX: usize = 64;
/// An affected service's name / role.
const SERVICE_NAME_MAX: usize = 100;
const SERVICE_ROLE_MAX: usize = 40;
/// Affected services listed by name; the rest are counted ("and N more").
const SERVICES_LISTED: usize = 10;
/// The affected-services text where it is one value (Teams, Google Chat).
const SERVICES_TEXT_MAX: usize = 1000;
/// One suggested action's text / type.
const ACTION_MAX: usize = 300;
const ACTION_KIND_MAX: usize = 40;
/// A link longer than this is not linked (a cut URL is a broken URL).
const LINK_MAX: usize = 2000;
/// Discord 6000 fit: a field trimmed to fewer characters than this is
/// dropped instead.
const DISCORD_MIN_TRIMMED_FIELD: usize = 40;

const ELLIPSIS: char = '…';
/// Shown for a value that is blank (platforms reject empty fields).
const BLANK: &str = "—";
const LINK_TITLE: &str = "View analysis";

// ---------------------------------------------------------------------------
// Public API.

/// The severity's colour as `0xRRGGBB`: critical red, high orange, medium
/// yellow, low blue-grey.
pub fn severity_colour(s: Severity) -> u32 {
    match s {
        Severity::Critical => 0xD3_2F_2F,
        Severity::High => 0xF5_7C_00,
        Severity::Medium => 0xFB_C0_2D,
        Severity::Low => 0x60_7D_8B,
    }
}

/// `s` cut to at most `max_chars` chars (Unicode scalar values), on a char
/// boundary. When it has to cut, trailing whitespace is dropped and `…` is
/// appended *within* the limit; `max_chars == 0` gives `""`. Borrows when
/// nothing is cut.
pub fn truncate(s: &str, max_chars: usize) -> Cow<'_, str> {
    if s.char_indices().nth(max_chars).is_none() {
        return Cow::Borrowed(s);
    }
    if max_chars == 0 {
        return Cow::Borrowed("");
    }
    // Byte offset of the (max_chars - 1)th char: keep max_chars - 1 chars.
    let cut = s
        .char_indices()
        .nth(max_chars - 1)
        .map_or(s.len(), |(i, _)| i);
    let head = s.get(..cut).unwrap_or("").trim_end();
    let mut out = String::with_capacity(head.len() + ELLIPSIS.len_utf8());
    out.push_str(head);
    out.push(ELLIPSIS);
    Cow::Owned(out)
}

/// A Slack incoming-webhook message: `{"text", "blocks"}`.
///
/// Blocks: a header (`🟠 HIGH: <summary>`, ≤ [`SLACK_HEADER_MAX`]); the
/// summary in a section when the header had to cut it; a section of fields
/// (severity, project, root cause, error type, category); a section of
/// affected services; a section of suggested actions; an actions block
/// with a "View analysis" button when there is a link; a context block
/// with the analysis id and time. All mrkdwn has `&`, `<`, `>` escaped;
/// the header is `plain_text`, which Slack does not parse for mentions or
/// links, and is left unescaped.
pub fn slack(a: &Analysis) -> Value {
    let v = View::new(a);
    let esc = slack_escape as Esc;

    let (header, header_cut) = v.headline(SLACK_HEADER_MAX);
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": header, "emoji": true},
    })];
    if header_cut {
        blocks.push(slack_section(truncate_escaped(
            v.summary_or_blank(),
            SUMMARY_MAX.min(SLACK_SECTION_TEXT_MAX),
            esc,
        )));
    }

    let fields: Vec<Value> = v
        .facts()
        .iter()
        .take(SLACK_FIELDS_MAX)
        .map(|(label, value)| {
            json!({
                "type": "mrkdwn",
                "text": labelled(&format!("*{label}*\n"), value, SLACK_FIELD_TEXT_MAX, esc),
            })
        })
        .collect();
    blocks.push(json!({"type": "section", "fields": fields}));

    if !v.services.is_empty() {
        let list = v.services_list("\n", "• ");
        blocks.push(slack_section(labelled(
            "*Affected services*\n",
            &list,
            SLACK_SECTION_TEXT_MAX,
            esc,
        )));
    }
    if !v.actions.is_empty() {
        blocks.push(slack_section(labelled(
            "*Suggested actions*\n",
            &v.actions_list("\n"),
            SLACK_SECTION_TEXT_MAX,
            esc,
        )));
    }
    if let Some(url) = v.link.filter(|u| u.chars().count() <= SLACK_BUTTON_URL_MAX) {
        blocks.push(json!({
            "type": "actions",
            "elements": [{
                "type": "button",
                "text": {
                    "type": "plain_text",
                    "text": truncate(LINK_TITLE, SLACK_BUTTON_TEXT_MAX),
                },
                "url": url,
            }],
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{
            "type": "mrkdwn",
            "text": truncate_escaped(&v.footer(), SLACK_SECTION_TEXT_MAX, esc),
        }],
    }));
    blocks.truncate(SLACK_BLOCKS_MAX);

    json!({
        "text": truncate_escaped(&v.fallback(), FALLBACK_MAX.min(SLACK_TEXT_MAX), esc),
        "blocks": blocks,
    })
}

/// A Microsoft Teams message; the card format follows the webhook URL:
///
/// - **legacy Office 365 connector** URLs get a `MessageCard`: the host is
///   `outlook.office.com`, `outlook.office365.com` or a subdomain of
///   `webhook.office.com`, *and* the path contains `/webhook` (which also
///   covers `/webhookb2/`) or `/IncomingWebhook/` (path compared
///   ASCII-case-insensitively, query and fragment ignored);
/// - **every other URL** (Workflows / Power Automate, e.g.
///   `*.logic.azure.com/workflows/…`, `*.powerplatform.com/…`, or anything
///   unparseable) gets a `message` with an Adaptive Card 1.4 attachment.
///
/// Text fields are capped (title ≤ 200, summary ≤ 2000 chars, …) so the
/// whole message stays well under Teams' ~28 KB ([`TEAMS_MESSAGE_BYTES_MAX`]).
/// Teams renders neither HTML nor mentions from this text (mentions need an
/// explicit `msteams.entities` entry), so text is passed as is.
pub fn teams(a: &Analysis, webhook_url: &str) -> Value {
    let v = View::new(a);
    if is_teams_connector_url(webhook_url) {
        teams_message_card(&v)
    } else {
        teams_adaptive_card(&v)
    }
}

/// A Discord webhook message: a short `content`, one embed (title linked to
/// the analysis, colour, inline fields for severity / project / root cause,
/// fields for suggested actions and affected services, footer, timestamp
/// when `analysis.timestamp` is RFC 3339), and `allowed_mentions` that
/// parses nothing, so no text can ping `@everyone`, a role or a user.
///
/// Every embed limit is kept (see [`DISCORD_TITLE_MAX`]); if the embed's
/// total would pass [`DISCORD_EMBED_TOTAL_MAX`], fields are trimmed / dropped
/// from the end (affected services first) until it fits.
pub fn discord(a: &Analysis) -> Value {
    let v = View::new(a);
    let no = no_escape as Esc;

    let (title, title_cut) = v.headline(DISCORD_TITLE_MAX);
    let mut fields = Vec::new();
    for (label, value) in v.facts() {
        fields.push(EmbedField {
            name: truncate(label, DISCORD_FIELD_NAME_MAX).into_owned(),
            value: truncate(&value, DISCORD_FIELD_VALUE_MAX).into_owned(),
            inline: true,
        });
    }
    if !v.actions.is_empty() {
        fields.push(EmbedField {
            name: "Suggested actions".into(),
            value: truncate_escaped(&v.actions_list("\n"), DISCORD_FIELD_VALUE_MAX, no),
            inline: false,
        });
    }
    if !v.services.is_empty() {
        fields.push(EmbedField {
            name: "Affected services".into(),
            value: truncate_escaped(&v.services_list("\n", "• "), DISCORD_FIELD_VALUE_MAX, no),
            inline: false,
        });
    }
    fields.truncate(DISCORD_FIELDS_MAX);
    let mut embed = Embed {
        title,
        description: title_cut.then(|| {
            truncate(
                v.summary_or_blank(),
                SUMMARY_MAX.min(DISCORD_DESCRIPTION_MAX),
            )
            .into_owned()
        }),
        fields,
        footer: truncate(&v.footer(), DISCORD_FOOTER_MAX).into_owned(),
    };
    fit_embed(&mut embed, DISCORD_EMBED_TOTAL_MAX);

    let mut e = Map::new();
    if !embed.title.is_empty() {
        e.insert("title".into(), json!(embed.title));
    }
    if let Some(d) = embed.description.filter(|d| !d.is_empty()) {
        e.insert("description".into(), json!(d));
    }
    if let Some(url) = v.link {
        e.insert("url".into(), json!(url));
    }
    e.insert("color".into(), json!(severity_colour(v.severity)));
    let fields: Vec<Value> = embed
        .fields
        .iter()
        .map(|f| json!({"name": f.name, "value": f.value, "inline": f.inline}))
        .collect();
    e.insert("fields".into(), Value::Array(fields));
    if !embed.footer.is_empty() {
        e.insert("footer".into(), json!({"text": embed.footer}));
    }
    if let Some(ts) = rfc3339(&a.timestamp) {
        e.insert("timestamp".into(), json!(ts));
    }

    json!({
        "content": truncate(&v.fallback(), FALLBACK_MAX.min(DISCORD_CONTENT_MAX)),
        "embeds": [Value::Object(e)],
        "allowed_mentions": {"parse": []},
    })
}

/// A Google Chat webhook message: a plain `text` fallback (≤
/// [`GOOGLE_CHAT_TEXT_MAX`]; `<`/`>` replaced by `‹`/`›` since Chat parses
/// `<users/all>` mentions in it and documents no escape) and one `cardsV2`
/// card: header (severity, project), the summary, decorated texts for
/// severity (in its colour), project, root cause and affected services, the
/// suggested actions, and a "View analysis" button when there is a link.
/// Card text is Chat's HTML subset, so every value is HTML-escaped.
pub fn google_chat(a: &Analysis) -> Value {
    let v = View::new(a);
    let esc = html_escape_char as Esc;
    let colour = format!("#{:06X}", severity_colour(v.severity));

    let mut widgets = vec![json!({"textParagraph": {
        "text": truncate_escaped(v.summary_or_blank(), SUMMARY_MAX, esc),
    }})];
    widgets.push(json!({"decoratedText": {
        "topLabel": "Severity",
        "text": format!("<font color=\"{colour}\"><b>{}</b></font>", v.label()),
    }}));
    for (label, value) in v.facts().into_iter().skip(1) {
        widgets.push(json!({"decoratedText": {
            "topLabel": label,
            "text": truncate_escaped(&value, SERVICES_TEXT_MAX, esc),
            "wrapText": true,
        }}));
    }
    if !v.services.is_empty() {
        widgets.push(json!({"decoratedText": {
            "topLabel": "Affected services",
            "text": truncate_escaped(&v.services_list(", ", ""), SERVICES_TEXT_MAX, esc),
            "wrapText": true,
        }}));
    }
    if !v.actions.is_empty() {
        let items: Vec<String> = v
            .actions
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}. {}", i + 1, escape_html(s)))
            .collect();
        widgets.push(json!({"textParagraph": {
            "text": format!("<b>Suggested actions</b><br>{}", items.join("<br>")),
        }}));
    }
    widgets.push(json!({"textParagraph": {
        "text": format!("<font color=\"#80868B\">{}</font>", escape_html(&v.footer())),
    }}));
    if let Some(url) = v.link {
        widgets.push(json!({"buttonList": {"buttons": [{
            "text": LINK_TITLE,
            "onClick": {"openLink": {"url": url}},
        }]}}));
    }

    let text = defang_angles(&v.fallback());
    json!({
        "text": truncate(&text, FALLBACK_MAX.min(GOOGLE_CHAT_TEXT_MAX)),
        "cardsV2": [{
            "cardId": "sigsentry-analysis",
            "card": {
                "header": {
                    "title": truncate(
                        &format!("{} SigSentry · {} severity", v.emoji(), v.label()),
                        TITLE_MAX,
                    ),
                    "subtitle": truncate(&v.project, TITLE_MAX),
                },
                "sections": [{"widgets": widgets}],
            },
        }],
    })
}

/// An email: a single-line subject, a plain-text body and an HTML body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// `[SigSentry] HIGH: <summary ≤ 120 chars>`, never containing CR, LF or
    /// any other control character.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// A small HTML document; every interpolated value is HTML-escaped and
    /// the link is an `<a href>` only for `http://` / `https://` URLs.
    pub html: String,
}

/// The email for an analysis (see [`Email`]); the summary is cut at 10,000
/// characters, the rest as in the chat messages.
pub fn email(a: &Analysis) -> Email {
    let v = View::new(a);
    let subject = format!(
        "[SigSentry] {}: {}",
        v.label(),
        truncate(v.summary_line_or_blank(), EMAIL_SUBJECT_SUMMARY_MAX)
    );
    let summary = truncate(v.summary_or_blank(), EMAIL_SUMMARY_MAX);
    let facts = v.facts();

    // Plain text.
    let mut text = format!(
        "SigSentry analysis: {} severity\n\n{summary}\n\n",
        v.label()
    );
    for (label, value) in facts.iter().skip(1) {
        text.push_str(&format!("{label}: {value}\n"));
    }
    if !v.services.is_empty() {
        text.push_str("\nAffected services:\n");
        text.push_str(&v.services_list("\n", "- "));
        text.push('\n');
    }
    if !v.actions.is_empty() {
        text.push_str("\nSuggested actions:\n");
        text.push_str(&v.actions_list("\n"));
        text.push('\n');
    }
    match (v.link, &v.url_text) {
        (Some(url), _) => text.push_str(&format!("\n{LINK_TITLE}: {url}\n")),
        (None, Some(u)) => text.push_str(&format!("\nLink: {u}\n")),
        (None, None) => {}
    }
    text.push_str(&format!("\n{}\n", v.footer()));

    // HTML.
    let colour = format!("#{:06X}", severity_colour(v.severity));
    let mut html = String::new();
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str(&format!(
        "<title>{}</title>\n</head>\n",
        escape_html(&subject)
    ));
    html.push_str(
        "<body style=\"margin:0;padding:16px;font-family:-apple-system,'Segoe UI',Roboto,\
         Helvetica,Arial,sans-serif;color:#1F2328;\">\n",
    );
    html.push_str(&format!(
        "<div style=\"max-width:640px;border-left:4px solid {colour};padding-left:12px;\">\n"
    ));
    html.push_str(&format!(
        "<p style=\"margin:0 0 4px;font-size:12px;font-weight:bold;color:{colour};\">{} SEVERITY</p>\n",
        escape_html(v.label())
    ));
    html.push_str("<h1 style=\"margin:0 0 12px;font-size:18px;\">SigSentry analysis</h1>\n");
    html.push_str(&format!(
        "<p style=\"white-space:pre-wrap;\">{}</p>\n",
        escape_html(&summary)
    ));
    html.push_str("<table style=\"border-collapse:collapse;font-size:14px;\">\n");
    for (label, value) in facts.iter().skip(1) {
        html.push_str(&format!(
            "<tr><th style=\"text-align:left;padding:2px 12px 2px 0;\">{}</th><td>{}</td></tr>\n",
            escape_html(label),
            escape_html(value)
        ));
    }
    html.push_str("</table>\n");
    if !v.services.is_empty() {
        html.push_str("<h2 style=\"font-size:15px;\">Affected services</h2>\n<ul>\n");
        for s in &v.services {
            html.push_str(&format!("<li>{}</li>\n", escape_html(s)));
        }
        if v.services_more > 0 {
            html.push_str(&format!("<li>and {} more</li>\n", v.services_more));
        }
        html.push_str("</ul>\n");
    }
    if !v.actions.is_empty() {
        html.push_str("<h2 style=\"font-size:15px;\">Suggested actions</h2>\n<ol>\n");
        for s in &v.actions {
            html.push_str(&format!("<li>{}</li>\n", escape_html(s)));
        }
        html.push_str("</ol>\n");
    }
    match (v.link, &v.url_text) {
        (Some(url), _) => html.push_str(&format!(
            "<p><a href=\"{}\" style=\"color:#0969DA;\">{LINK_TITLE}</a></p>\n",
            escape_html(url)
        )),
        (None, Some(u)) => html.push_str(&format!("<p>Link: {}</p>\n", escape_html(u))),
        (None, None) => {}
    }
    html.push_str(&format!(
        "<p style=\"font-size:12px;color:#656D76;\">{}</p>\n</div>\n</body>\n</html>\n",
        escape_html(&v.footer())
    ));

    Email {
        subject,
        text,
        html,
    }
}

// ---------------------------------------------------------------------------
// The analysis, cleaned and capped once (platform-neutral).

struct View<'a> {
    severity: Severity,
    /// Multi-line, control characters cleaned, ≤ SCAN_MAX.
    summary: String,
    /// The summary on one line (titles, subjects).
    summary_line: String,
    /// `slug (id)` or `id`.
    project: String,
    /// (label, value) for each root-cause part present.
    root: Vec<(&'static str, String)>,
    /// The first SERVICES_LISTED services, one line each.
    services: Vec<String>,
    services_more: usize,
    /// The top actions by priority, one line each, without numbering.
    actions: Vec<String>,
    /// The URL when it is a plain http(s) link fit to be linked.
    link: Option<&'a str>,
    /// The URL as text, when present but not a link.
    url_text: Option<String>,
    analysis_id: String,
    timestamp: String,
}

impl<'a> View<'a> {
    fn new(a: &'a Analysis) -> View<'a> {
        let summary = clean_multiline(&truncate(&a.summary, SCAN_MAX));
        let summary_line = one_line(&summary);

        let slug = a
            .project_slug
            .as_deref()
            .map(|s| line(s, ID_MAX))
            .unwrap_or_default();
        let id = line(&a.project_id, ID_MAX);
        let project = match (slug.is_empty(), id.is_empty()) {
            (false, false) => format!("{slug} ({id})"),
            (false, true) => slug,
            (true, false) => id,
            (true, true) => BLANK.to_owned(),
        };

        let mut root = Vec::new();
        if let Some(rc) = &a.root_cause {
            for (label, part) in [
                ("Root cause", &rc.service),
                ("Error type", &rc.error_type),
                ("Category", &rc.category),
            ] {
                let value = part.as_deref().map(|s| line(s, ROOT_CAUSE_PART_MAX));
                if let Some(value) = value.filter(|s| !s.is_empty()) {
                    root.push((label, value));
                }
            }
        }

        let services = a
            .affected_services
            .iter()
            .take(SERVICES_LISTED)
            .map(|s| {
                let name = line(&s.name, SERVICE_NAME_MAX);
                let name = if name.is_empty() {
                    "(unnamed)".to_owned()
                } else {
                    name
                };
                let mut notes = Vec::new();
                if let Some(role) = s.role.as_deref().map(|r| line(r, SERVICE_ROLE_MAX)) {
                    if !role.is_empty() {
                        notes.push(role);
                    }
                }
                if let Some(n) = s.error_count {
                    notes.push(format!("{n} error{}", if n == 1 { "" } else { "s" }));
                }
                if notes.is_empty() {
                    name
                } else {
                    format!("{name} ({})", notes.join(", "))
                }
            })
            .collect();
        let services_more = a.affected_services.len().saturating_sub(SERVICES_LISTED);

        let actions = a
            .top_actions(a.suggested_actions.len())
            .into_iter()
            .filter_map(|s| {
                let text = line(&s.action, ACTION_MAX);
                if text.is_empty() {
                    return None;
                }
                let kind = s.kind.as_deref().map(|k| line(k, ACTION_KIND_MAX));
                Some(match kind.filter(|k| !k.is_empty()) {
                    Some(kind) => format!("{text} ({kind})"),
                    None => text,
                })
            })
            .take(TOP_ACTIONS)
            .collect();

        let link = a.url.as_deref().and_then(web_link);
        let url_text = match (&a.url, link) {
            (Some(u), None) => Some(line(u, LINK_MAX)).filter(|u| !u.is_empty()),
            _ => None,
        };

        View {
            severity: a.severity,
            summary,
            summary_line,
            project,
            root,
            services,
            services_more,
            actions,
            link,
            url_text,
            analysis_id: line(&a.analysis_id, ID_MAX),
            timestamp: line(&a.timestamp, TIMESTAMP_MAX),
        }
    }

    fn label(&self) -> &'static str {
        match self.severity {
            Severity::Critical => "CRITICAL",
            Severity::High => "HIGH",
            Severity::Medium => "MEDIUM",
            Severity::Low => "LOW",
        }
    }

    fn emoji(&self) -> &'static str {
        match self.severity {
            Severity::Critical => "🔴",
            Severity::High => "🟠",
            Severity::Medium => "🟡",
            Severity::Low => "🔵",
        }
    }

    fn summary_or_blank(&self) -> &str {
        if self.summary.is_empty() {
            BLANK
        } else {
            &self.summary
        }
    }

    fn summary_line_or_blank(&self) -> &str {
        if self.summary_line.is_empty() {
            BLANK
        } else {
            &self.summary_line
        }
    }

    /// `🟠 HIGH: <summary>` cut to `max`, and whether the summary was cut.
    fn headline(&self, max: usize) -> (String, bool) {
        let full = format!(
            "{} {}: {}",
            self.emoji(),
            self.label(),
            self.summary_line_or_blank()
        );
        let cut = truncate(&full, max);
        let was_cut = matches!(cut, Cow::Owned(_));
        (cut.into_owned(), was_cut)
    }

    /// `[SigSentry] HIGH · <project>: <summary>` (not cut; callers cut).
    fn fallback(&self) -> String {
        format!(
            "[SigSentry] {} · {}: {}",
            self.label(),
            self.project,
            truncate(self.summary_line_or_blank(), FALLBACK_MAX)
        )
    }

    /// `SigSentry analysis <id> · <timestamp>`.
    fn footer(&self) -> String {
        let id = if self.analysis_id.is_empty() {
            BLANK
        } else {
            &self.analysis_id
        };
        if self.timestamp.is_empty() {
            format!("SigSentry analysis {id}")
        } else {
            format!("SigSentry analysis {id} · {}", self.timestamp)
        }
    }

    /// Severity, project and the root-cause parts present, as (label, value).
    fn facts(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("Severity", self.label().to_owned()),
            ("Project", self.project.clone()),
        ];
        f.extend(self.root.iter().cloned());
        f
    }

    /// The listed services joined by `sep`, each after `bullet`, then
    /// "and N more" when some were not listed.
    fn services_list(&self, sep: &str, bullet: &str) -> String {
        let mut items: Vec<String> = self
            .services
            .iter()
            .map(|s| format!("{bullet}{s}"))
            .collect();
        if self.services_more > 0 {
            items.push(format!("{bullet}and {} more", self.services_more));
        }
        items.join(sep)
    }

    /// `1. …`, `2. …` joined by `sep`.
    fn actions_list(&self, sep: &str) -> String {
        let items: Vec<String> = self
            .actions
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}. {s}", i + 1))
            .collect();
        items.join(sep)
    }
}

// ---------------------------------------------------------------------------
// Teams.

/// Whether `url` is a legacy Office 365 connector webhook (see [`teams`]).
fn is_teams_connector_url(url: &str) -> bool {
    let url = url.trim();
    let Some(rest) = strip_prefix_ci(url, "https://").or_else(|| strip_prefix_ci(url, "http://"))
    else {
        return false;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = (rest.get(..end).unwrap_or(""), rest.get(end..).unwrap_or(""));
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host = host_port.split(':').next().unwrap_or(host_port);
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    let path = tail.get(..path_end).unwrap_or("").to_ascii_lowercase();

    let connector_host = host == "outlook.office.com"
        || host == "outlook.office365.com"
        || host.ends_with(".webhook.office.com");
    connector_host && (path.contains("/webhook") || path.contains("/incomingwebhook/"))
}

fn adaptive_colour(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "Attention",
        Severity::High | Severity::Medium => "Warning",
        Severity::Low => "Accent",
    }
}

fn teams_adaptive_card(v: &View<'_>) -> Value {
    let (title, title_cut) = v.headline(TITLE_MAX);
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": title,
        "size": "Medium",
        "weight": "Bolder",
        "color": adaptive_colour(v.severity),
        "wrap": true,
    })];
    if title_cut {
        body.push(json!({
            "type": "TextBlock",
            "text": truncate(v.summary_or_blank(), SUMMARY_MAX),
            "wrap": true,
        }));
    }
    let mut facts: Vec<Value> = v
        .facts()
        .into_iter()
        .map(|(t, value)| json!({"title": t, "value": value}))
        .collect();
    if !v.services.is_empty() {
        facts.push(json!({
            "title": "Affected services",
            "value": truncate(&v.services_list(", ", ""), SERVICES_TEXT_MAX),
        }));
    }
    body.push(json!({"type": "FactSet", "facts": facts}));
    if !v.actions.is_empty() {
        body.push(json!({
            "type": "TextBlock",
            "text": "Suggested actions",
            "weight": "Bolder",
            "spacing": "Medium",
            "wrap": true,
        }));
        body.push(json!({"type": "TextBlock", "text": v.actions_list("\n"), "wrap": true}));
    }
    body.push(json!({
        "type": "TextBlock",
        "text": v.footer(),
        "size": "Small",
        "isSubtle": true,
        "wrap": true,
    }));

    let mut content = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    if let (Some(url), Some(obj)) = (v.link, content.as_object_mut()) {
        obj.insert(
            "actions".into(),
            json!([{"type": "Action.OpenUrl", "title": LINK_TITLE, "url": url}]),
        );
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": content,
        }],
    })
}

fn teams_message_card(v: &View<'_>) -> Value {
    let (title, title_cut) = v.headline(TITLE_MAX);
    let mut facts: Vec<Value> = v
        .facts()
        .into_iter()
        .map(|(n, value)| json!({"name": n, "value": value}))
        .collect();
    if !v.services.is_empty() {
        facts.push(json!({
            "name": "Affected services",
            "value": truncate(&v.services_list(", ", ""), SERVICES_TEXT_MAX),
        }));
    }
    let mut paragraphs = Vec::new();
    if title_cut {
        paragraphs.push(truncate(v.summary_or_blank(), SUMMARY_MAX).into_owned());
    }
    if !v.actions.is_empty() {
        paragraphs.push(format!("**Suggested actions**\n\n{}", v.actions_list("\n")));
    }
    paragraphs.push(v.footer());

    let mut card = json!({
        "@type": "MessageCard",
        "@context": "http://schema.org/extensions",
        "themeColor": format!("{:06X}", severity_colour(v.severity)),
        "summary": truncate(&v.fallback(), TITLE_MAX),
        "title": title,
        "sections": [{
            "facts": facts,
            "text": paragraphs.join("\n\n"),
            "markdown": true,
        }],
    });
    if let (Some(url), Some(obj)) = (v.link, card.as_object_mut()) {
        obj.insert(
            "potentialAction".into(),
            json!([{
                "@type": "OpenUri",
                "name": LINK_TITLE,
                "targets": [{"os": "default", "uri": url}],
            }]),
        );
    }
    card
}

// ---------------------------------------------------------------------------
// Discord.

struct EmbedField {
    name: String,
    value: String,
    inline: bool,
}

struct Embed {
    title: String,
    description: Option<String>,
    fields: Vec<EmbedField>,
    footer: String,
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// The characters Discord counts toward [`DISCORD_EMBED_TOTAL_MAX`].
fn embed_chars(e: &Embed) -> usize {
    chars(&e.title)
        + e.description.as_deref().map_or(0, chars)
        + e.fields
            .iter()
            .map(|f| chars(&f.name) + chars(&f.value))
            .sum::<usize>()
        + chars(&e.footer)
}

/// Makes `e` fit `max` total characters: trims the last field's value (or
/// drops the field when too little would be left), repeatedly; then the
/// description, the footer, the title. Each step shrinks the total, so the
/// loop ends; its bound is only a belt to the braces.
fn fit_embed(e: &mut Embed, max: usize) {
    for _ in 0..e.fields.len() + 8 {
        let total = embed_chars(e);
        if total <= max {
            return;
        }
        let over = total - max;
        if let Some(last) = e.fields.last_mut() {
            let len = chars(&last.value);
            if len > over + DISCORD_MIN_TRIMMED_FIELD {
                last.value = truncate(&last.value, len - over).into_owned();
            } else {
                e.fields.pop();
            }
            continue;
        }
        if let Some(d) = &e.description {
            let len = chars(d);
            e.description = (len > over).then(|| truncate(d, len - over).into_owned());
            continue;
        }
        let len = chars(&e.footer);
        if len > 0 {
            e.footer = if len > over {
                truncate(&e.footer, len - over).into_owned()
            } else {
                String::new()
            };
            continue;
        }
        let len = chars(&e.title);
        e.title = if len > over {
            truncate(&e.title, len - over).into_owned()
        } else {
            String::new()
        };
    }
}

/// `s` when it is an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)`,
/// fields in range), with `t`/`z` upper-cased; `None` otherwise.
fn rfc3339(s: &str) -> Option<String> {
    let b = s.trim().as_bytes();
    let num = |from: usize, to: usize| -> Option<u32> {
        let d = b.get(from..to)?;
        if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(d.iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0')))
    };
    let is = |i: usize, set: &[u8]| b.get(i).is_some_and(|c| set.contains(c));

    let year = num(0, 4)?;
    let month = num(5, 7)?;
    let day = num(8, 10)?;
    let hour = num(11, 13)?;
    let minute = num(14, 16)?;
    let second = num(17, 19)?;
    if !(is(4, b"-") && is(7, b"-") && is(10, b"Tt") && is(13, b":") && is(16, b":")) {
        return None;
    }
    let mut i = 19;
    if is(i, b".") {
        let start = i + 1;
        let mut j = start;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j == start || j - start > 9 {
            return None;
        }
        i = j;
    }
    if is(i, b"Zz") {
        i += 1;
    } else if is(i, b"+-") {
        let (oh, om) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
        if !is(i + 3, b":") || oh > 23 || om > 59 {
            return None;
        }
        i += 6;
    } else {
        return None;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if i != b.len() || day == 0 || day > days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    std::str::from_utf8(b).ok().map(str::to_ascii_uppercase)
}

// ---------------------------------------------------------------------------
// Text helpers.

/// An escaper: the replacement for a char, or `None` to keep it.
type Esc = fn(char) -> Option<&'static str>;

fn no_escape(_: char) -> Option<&'static str> {
    None
}

/// Slack's three control characters (Slack "Formatting text": escaping).
fn slack_escape(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        _ => None,
    }
}

fn html_escape_char(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '"' => Some("&quot;"),
        '\'' => Some("&#39;"),
        _ => None,
    }
}

/// `s` with `&`, `<`, `>`, `"`, `'` as HTML character references.
fn escape_html(s: &str) -> String {
    escape_with(s, html_escape_char)
}

fn escape_with(s: &str, esc: Esc) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match esc(c) {
            Some(e) => out.push_str(e),
            None => out.push(c),
        }
    }
    out
}

/// `s` escaped by `esc`, cut so the *escaped* text is at most `max` chars
/// (an escape sequence is never split) and ends with `…` when cut.
fn truncate_escaped(s: &str, max: usize, esc: Esc) -> String {
    let piece = |c: char| esc(c).map_or(1, chars);
    let total: usize = s.chars().map(piece).sum();
    if total <= max {
        return escape_with(s, esc);
    }
    if max == 0 {
        return String::new();
    }
    let budget = max - 1;
    let mut out = String::new();
    let mut n = 0;
    for c in s.chars() {
        let len = piece(c);
        if n + len > budget {
            break;
        }
        match esc(c) {
            Some(e) => out.push_str(e),
            None => out.push(c),
        }
        n += len;
    }
    let keep = out.trim_end().len();
    out.truncate(keep);
    out.push(ELLIPSIS);
    out
}

/// `label` then `value` escaped, the whole at most `max` chars.
fn labelled(label: &str, value: &str, max: usize, esc: Esc) -> String {
    let budget = max.saturating_sub(chars(label));
    let value = if value.is_empty() { BLANK } else { value };
    format!("{label}{}", truncate_escaped(value, budget, esc))
}

fn slack_section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

/// Bidirectional embedding / override / isolate controls: they reorder the
/// text around them (e.g. to spoof a subject line), so they are dropped.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Multi-line text: CRLF / CR / NEL / U+2028 / U+2029 become `\n`, other
/// control characters (tab included) a space, bidi controls dropped; trimmed.
fn clean_multiline(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\r' => {
                if it.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => out.push('\n'),
            c if is_bidi_control(c) => {}
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.trim().to_owned()
}

/// One line: every run of whitespace or control characters becomes one
/// space, bidi controls are dropped; trimmed.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut gap = false;
    for c in s.chars() {
        if is_bidi_control(c) {
            continue;
        }
        if c.is_whitespace() || c.is_control() {
            gap = true;
            continue;
        }
        if gap && !out.is_empty() {
            out.push(' ');
        }
        gap = false;
        out.push(c);
    }
    out
}

/// An untrusted short value on one line, at most `max` chars (cut before
/// cleaning too, so the work is bounded; a cut value keeps its `…`).
fn line(s: &str, max: usize) -> String {
    let pre = truncate(s, max.saturating_mul(4).max(64));
    truncate(&one_line(&pre), max).into_owned()
}

/// `<` and `>` replaced by `‹` and `›` (Google Chat plain text).
fn defang_angles(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => '‹',
            '>' => '›',
            c => c,
        })
        .collect()
}

fn strip_prefix_ci<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// `url` (trimmed) when it is fit to be a link on every platform: an
/// `http://` or `https://` URL with a host, no whitespace or control
/// characters, at most `LINK_MAX` chars.
fn web_link(url: &str) -> Option<&str> {
    let u = url.trim();
    let rest = strip_prefix_ci(u, "https://").or_else(|| strip_prefix_ci(u, "http://"))?;
    let host_ok = rest
        .chars()
        .next()
        .is_some_and(|c| !matches!(c, '/' | '?' | '#' | '@'));
    let clean = !u
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || is_bidi_control(c));
    (host_ok && clean && chars(u) <= LINK_MAX).then_some(u)
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::analysis::{AffectedService, RootCause, SuggestedAction};

    const WORKFLOWS_URL: &str =
        "https://prod-00.westus.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?sig=x";
    const LEGACY_URL: &str = "https://outlook.office.com/webhook/abc/IncomingWebhook/def/ghi";

    fn sample() -> Analysis {
        Analysis::sample("prj_def456", Severity::High)
    }

    fn bless() -> bool {
        std::env::var("HOOKGATE_BLESS").is_ok_and(|v| v == "1")
    }

    fn golden_path(name: &str) -> String {
        format!("{}/src/outbound/golden/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn golden_json(name: &str, actual: &Value, expected: &str) {
        if bless() {
            let pretty = serde_json::to_string_pretty(actual).unwrap();
            std::fs::write(golden_path(name), pretty + "\n").unwrap();
            return;
        }
        let expected: Value = serde_json::from_str(expected).unwrap_or_else(|e| {
            panic!("golden {name} is not JSON ({e}); run with HOOKGATE_BLESS=1")
        });
        assert_eq!(
            actual,
            &expected,
            "{name} differs from its golden file; actual:\n{}",
            serde_json::to_string_pretty(actual).unwrap()
        );
    }

    fn golden_text(name: &str, actual: &str, expected: &str) {
        if bless() {
            std::fs::write(golden_path(name), actual).unwrap();
            return;
        }
        assert_eq!(actual, expected, "{name} differs from its golden file");
    }

    #[test]
    fn golden_slack() {
        golden_json(
            "slack.json",
            &slack(&sample()),
            include_str!("golden/slack.json"),
        );
    }

    #[test]
    fn golden_teams_workflows() {
        golden_json(
            "teams_workflows.json",
            &teams(&sample(), WORKFLOWS_URL),
            include_str!("golden/teams_workflows.json"),
        );
    }

    #[test]
    fn golden_teams_legacy() {
        golden_json(
            "teams_legacy.json",
            &teams(&sample(), LEGACY_URL),
            include_str!("golden/teams_legacy.json"),
        );
    }

    #[test]
    fn golden_discord() {
        golden_json(
            "discord.json",
            &discord(&sample()),
            include_str!("golden/discord.json"),
        );
    }

    #[test]
    fn golden_google_chat() {
        golden_json(
            "google_chat.json",
            &google_chat(&sample()),
            include_str!("golden/google_chat.json"),
        );
    }

    #[test]
    fn golden_email() {
        let e = email(&sample());
        assert_eq!(
            e.subject,
            "[SigSentry] HIGH: Checkout API returning 500s due to expired auth tokens"
        );
        golden_text("email.txt", &e.text, include_str!("golden/email.txt"));
        golden_text("email.html", &e.html, include_str!("golden/email.html"));
    }

    // -- limits --------------------------------------------------------------

    /// A huge analysis whose text is made of `fill` (an ASCII letter, or a
    /// 4-byte char to stress the byte limits).
    fn huge(fill: char) -> Analysis {
        let rep = |n: usize| std::iter::repeat_n(fill, n).collect::<String>();
        let mut a = Analysis::sample("prj_def456", Severity::Critical);
        a.summary = rep(100_000);
        a.project_slug = Some(rep(5_000));
        a.project_id = rep(5_000);
        a.analysis_id = rep(5_000);
        a.root_cause = Some(RootCause {
            service: Some(rep(10_000)),
            error_type: Some(rep(10_000)),
            category: Some(rep(10_000)),
        });
        a.affected_services = (0..500)
            .map(|i| AffectedService {
                name: format!("svc-{i}-{}", rep(1_000)),
                role: Some(rep(1_000)),
                error_count: Some(i),
            })
            .collect();
        a.suggested_actions = (0..200)
            .map(|i| SuggestedAction {
                kind: Some(rep(1_000)),
                action: format!("{i} {}", rep(5_000)),
                priority: Some(200 - i64::from(i)),
            })
            .collect();
        a
    }

    fn text_len(v: &Value) -> usize {
        v.as_str().map_or(0, |s| s.chars().count())
    }

    /// A cut value shows the ellipsis (a composite value such as
    /// `slug… (id…)` shows it inside).
    fn has_cut(v: &Value) -> bool {
        v.as_str().is_some_and(|s| s.contains(ELLIPSIS))
    }

    fn ends_cut(v: &Value) -> bool {
        v.as_str().is_some_and(|s| s.ends_with(ELLIPSIS))
    }

    fn assert_slack_limits(m: &Value) {
        assert!(text_len(&m["text"]) <= SLACK_TEXT_MAX);
        assert!(text_len(&m["text"]) > 0);
        let blocks = m["blocks"].as_array().unwrap();
        assert!(!blocks.is_empty() && blocks.len() <= SLACK_BLOCKS_MAX);
        for b in blocks {
            match b["type"].as_str().unwrap() {
                "header" => {
                    let n = text_len(&b["text"]["text"]);
                    assert!(n > 0 && n <= SLACK_HEADER_MAX, "header {n}");
                }
                "section" => {
                    if let Some(t) = b.get("text") {
                        let n = text_len(&t["text"]);
                        assert!(n > 0 && n <= SLACK_SECTION_TEXT_MAX, "section {n}");
                    }
                    if let Some(f) = b.get("fields") {
                        let f = f.as_array().unwrap();
                        assert!(f.len() <= SLACK_FIELDS_MAX);
                        for x in f {
                            let n = text_len(&x["text"]);
                            assert!(n > 0 && n <= SLACK_FIELD_TEXT_MAX, "field {n}");
                        }
                    }
                }
                "actions" => {
                    for e in b["elements"].as_array().unwrap() {
                        assert!(text_len(&e["text"]["text"]) <= SLACK_BUTTON_TEXT_MAX);
                        assert!(text_len(&e["url"]) <= SLACK_BUTTON_URL_MAX);
                    }
                }
                "context" => {
                    for e in b["elements"].as_array().unwrap() {
                        assert!(text_len(&e["text"]) <= SLACK_SECTION_TEXT_MAX);
                    }
                }
                other => panic!("unexpected block {other}"),
            }
        }
    }

    fn discord_total(embed: &Value) -> usize {
        let mut n = text_len(&embed["title"])
            + text_len(&embed["description"])
            + text_len(&embed["footer"]["text"]);
        for f in embed["fields"].as_array().unwrap() {
            n += text_len(&f["name"]) + text_len(&f["value"]);
        }
        n
    }

    fn assert_discord_limits(m: &Value) {
        assert!(text_len(&m["content"]) <= DISCORD_CONTENT_MAX);
        assert_eq!(m["allowed_mentions"], json!({"parse": []}));
        let embeds = m["embeds"].as_array().unwrap();
        assert_eq!(embeds.len(), 1);
        let e = &embeds[0];
        assert!(text_len(&e["title"]) <= DISCORD_TITLE_MAX);
        assert!(text_len(&e["description"]) <= DISCORD_DESCRIPTION_MAX);
        assert!(text_len(&e["footer"]["text"]) <= DISCORD_FOOTER_MAX);
        let fields = e["fields"].as_array().unwrap();
        assert!(fields.len() <= DISCORD_FIELDS_MAX);
        for f in fields {
            let (n, v) = (text_len(&f["name"]), text_len(&f["value"]));
            assert!(n > 0 && n <= DISCORD_FIELD_NAME_MAX);
            assert!(v > 0 && v <= DISCORD_FIELD_VALUE_MAX);
        }
        assert!(
            discord_total(e) <= DISCORD_EMBED_TOTAL_MAX,
            "total {}",
            discord_total(e)
        );
    }

    #[test]
    fn every_platform_respects_every_limit_on_a_huge_analysis() {
        for fill in ['x', '👍', 'é'] {
            let a = huge(fill);

            let s = slack(&a);
            assert_slack_limits(&s);
            assert!(
                ends_cut(&s["blocks"][0]["text"]["text"]),
                "slack header cut"
            );
            assert!(
                ends_cut(&s["blocks"][1]["text"]["text"]),
                "slack summary cut"
            );
            assert!(ends_cut(&s["text"]));
            for f in s["blocks"][2]["fields"].as_array().unwrap().iter().skip(1) {
                assert!(has_cut(&f["text"]), "slack field {f}");
            }

            for url in [WORKFLOWS_URL, LEGACY_URL] {
                let t = teams(&a, url);
                let bytes = serde_json::to_vec(&t).unwrap().len();
                assert!(
                    bytes <= TEAMS_MESSAGE_BYTES_MAX,
                    "teams {bytes} bytes ({fill})"
                );
            }
            let t = teams(&a, WORKFLOWS_URL);
            let body = t["attachments"][0]["content"]["body"].as_array().unwrap();
            assert!(text_len(&body[0]["text"]) <= TITLE_MAX && ends_cut(&body[0]["text"]));
            assert!(text_len(&body[1]["text"]) <= SUMMARY_MAX && ends_cut(&body[1]["text"]));
            let t = teams(&a, LEGACY_URL);
            assert!(text_len(&t["title"]) <= TITLE_MAX && ends_cut(&t["title"]));

            let d = discord(&a);
            assert_discord_limits(&d);
            let e = &d["embeds"][0];
            assert!(ends_cut(&e["title"]) && ends_cut(&e["description"]));
            assert!(e["fields"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| has_cut(&f["value"]) || f["name"] == "Severity"));

            let g = google_chat(&a);
            assert!(text_len(&g["text"]) <= GOOGLE_CHAT_TEXT_MAX && ends_cut(&g["text"]));
            let bytes = serde_json::to_vec(&g).unwrap().len();
            assert!(
                bytes <= GOOGLE_CHAT_MESSAGE_BYTES_MAX,
                "chat {bytes} bytes ({fill})"
            );

            let m = email(&a);
            assert!(!m.subject.contains(['\r', '\n']));
            assert!(m.subject.chars().count() <= 200 && m.subject.ends_with(ELLIPSIS));
            assert!(m.text.chars().count() < 20_000 && m.text.contains("and 490 more"));
            assert!(m.html.contains("and 490 more</li>"));
        }
    }

    #[test]
    fn the_top_three_actions_are_taken_by_priority() {
        let a = huge('x');
        let d = discord(&a);
        let actions = d["embeds"][0]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "Suggested actions")
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_owned();
        // Priorities 200 - i: the last three actions (199, 198, 197) come first.
        let lines: Vec<&str> = actions.lines().collect();
        assert_eq!(lines.len(), TOP_ACTIONS);
        assert!(lines[0].starts_with("1. 199 "), "{}", lines[0]);
        assert!(lines[1].starts_with("2. 198 "));
        assert!(lines[2].starts_with("3. 197 "));
    }

    #[test]
    fn discord_fit_trims_then_drops_fields_from_the_end() {
        let field = |c: char| EmbedField {
            name: "n".into(),
            value: std::iter::repeat_n(c, 1000).collect(),
            inline: false,
        };
        let mut e = Embed {
            title: "t".repeat(256),
            description: Some("d".repeat(4096)),
            fields: vec![field('a'), field('b'), field('c')],
            footer: "f".repeat(100),
        };
        fit_embed(&mut e, DISCORD_EMBED_TOTAL_MAX);
        assert_eq!(embed_chars(&e), DISCORD_EMBED_TOTAL_MAX);
        // 256 + 4096 + 100 = 4452: 1548 left for fields -> a (1001) + b cut.
        assert_eq!(e.fields.len(), 2);
        assert_eq!(chars(&e.fields[0].value), 1000);
        assert!(e.fields[1].value.ends_with(ELLIPSIS));

        // Nothing but the description and footer can give way.
        let mut e = Embed {
            title: "t".repeat(256),
            description: Some("d".repeat(4096)),
            fields: vec![],
            footer: "f".repeat(2048),
        };
        fit_embed(&mut e, DISCORD_EMBED_TOTAL_MAX);
        assert!(embed_chars(&e) <= DISCORD_EMBED_TOTAL_MAX);
        assert!(e
            .description
            .as_deref()
            .is_some_and(|d| d.ends_with(ELLIPSIS)));
    }

    // -- hostile text ----------------------------------------------------------

    const HOSTILE: &str = "<!channel> @everyone <script>alert(1)</script> & \r\n Subject: x";

    fn hostile() -> Analysis {
        let mut a = sample();
        a.summary = HOSTILE.into();
        a.project_slug = Some("<users/all>".into());
        a.root_cause = Some(RootCause {
            service: Some("<@U123> & co".into()),
            error_type: None,
            category: Some(String::new()),
        });
        a.url = Some("javascript:alert(1)".into());
        a
    }

    #[test]
    fn hostile_text_is_inert_everywhere() {
        let a = hostile();

        let s = slack(&a);
        let all = serde_json::to_string(&s["blocks"]).unwrap();
        assert!(s["text"].as_str().unwrap().contains("&lt;!channel&gt;"));
        assert!(all.contains("&lt;@U123&gt; &amp; co"));
        for b in s["blocks"].as_array().unwrap() {
            if b["type"] == "section" || b["type"] == "context" {
                let t = serde_json::to_string(b).unwrap();
                assert!(!t.contains("<!channel>") && !t.contains("<@U123>"), "{t}");
            }
        }
        // The header cut nothing, so the summary shows only in the header
        // (plain_text: not parsed for mentions).
        assert!(s["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("<!channel>"));
        assert!(
            !all.contains("javascript:"),
            "a non-http link is not linked"
        );

        let d = discord(&a);
        assert_eq!(d["allowed_mentions"], json!({"parse": []}));
        assert!(d["embeds"][0].get("url").is_none());

        let g = google_chat(&a);
        let text = g["text"].as_str().unwrap();
        assert!(!text.contains('<') && text.contains("‹users/all›"));
        let card = serde_json::to_string(&g["cardsV2"]).unwrap();
        assert!(card.contains("&lt;script&gt;") && !card.contains("<script>"));
        assert!(!card.contains("openLink"));

        for url in [WORKFLOWS_URL, LEGACY_URL] {
            let t = serde_json::to_string(&teams(&a, url)).unwrap();
            assert!(!t.contains("Action.OpenUrl") && !t.contains("OpenUri"));
        }

        let m = email(&a);
        assert!(!m.subject.contains(['\r', '\n']));
        assert_eq!(
            m.subject,
            "[SigSentry] HIGH: <!channel> @everyone <script>alert(1)</script> & Subject: x"
        );
        assert!(m.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!m.html.contains("<script>"));
        assert!(m.html.contains("&lt;users/all&gt;"));
        assert!(!m.html.contains("href=\"javascript"));
        assert!(m.html.contains("<p>Link: javascript:alert(1)</p>"));
        assert!(!m.text.contains('\r'));
    }

    #[test]
    fn subject_drops_every_line_break_and_bidi_control() {
        let mut a = sample();
        a.summary = "a\rb\nc\u{85}d\u{2028}e\u{2029}f\u{202E}g\tx\u{0}y".into();
        let m = email(&a);
        assert_eq!(m.subject, "[SigSentry] HIGH: a b c d e fg x y");
    }

    #[test]
    fn an_empty_analysis_gives_no_empty_required_field() {
        let mut a = sample();
        a.summary = " \r\n ".into();
        a.project_slug = None;
        a.project_id = String::new();
        a.analysis_id = String::new();
        a.timestamp = String::new();
        a.root_cause = None;
        a.affected_services = vec![];
        a.suggested_actions = vec![SuggestedAction {
            kind: None,
            action: "  ".into(),
            priority: None,
        }];
        a.url = None;

        let s = slack(&a);
        assert_slack_limits(&s);
        assert!(!serde_json::to_string(&s).unwrap().contains("\"text\":\"\""));
        let d = discord(&a);
        assert_discord_limits(&d);
        assert!(d["embeds"][0].get("timestamp").is_none());
        let g = google_chat(&a);
        assert!(!serde_json::to_string(&g).unwrap().contains("\"text\":\"\""));
        let m = email(&a);
        assert_eq!(m.subject, "[SigSentry] HIGH: —");
    }

    // -- helpers ---------------------------------------------------------------

    #[test]
    fn truncate_never_splits_a_char_and_counts_the_ellipsis() {
        assert_eq!(truncate("ééééé", 5), "ééééé");
        assert!(matches!(truncate("ééééé", 5), Cow::Borrowed(_)));
        assert_eq!(truncate("ééééé", 4), "ééé…");
        assert_eq!(truncate("ééééé", 1), "…");
        assert_eq!(truncate("ééééé", 0), "");
        assert_eq!(truncate("👍👍👍", 3), "👍👍👍");
        assert_eq!(truncate("👍👍👍", 2), "👍…");
        assert_eq!(truncate("ab cd", 4), "ab…");
        assert_eq!(truncate("", 0), "");
        for s in ["ééééé", "👍👍👍", "aé👍b c", "日本語のテキスト"] {
            for max in 0..8 {
                let t = truncate(s, max);
                assert!(t.chars().count() <= max, "{s:?} {max} -> {t:?}");
                assert!(s.starts_with(t.trim_end_matches(ELLIPSIS)));
                if s.chars().count() > max && max > 0 {
                    assert!(t.ends_with(ELLIPSIS));
                }
            }
        }
    }

    #[test]
    fn truncate_escaped_never_splits_an_escape() {
        assert_eq!(truncate_escaped("a<b", 10, slack_escape), "a&lt;b");
        assert_eq!(truncate_escaped("a<b", 6, slack_escape), "a&lt;b");
        assert_eq!(truncate_escaped("a<bc", 6, slack_escape), "a&lt;…");
        assert_eq!(truncate_escaped("a<b", 5, slack_escape), "a…");
        assert_eq!(truncate_escaped("a<b", 4, slack_escape), "a…");
        assert_eq!(truncate_escaped("<<<", 0, slack_escape), "");
    }

    #[test]
    fn teams_format_follows_the_url() {
        for legacy in [
            LEGACY_URL,
            "https://contoso.webhook.office.com/webhookb2/abc@def/IncomingWebhook/ghi/jkl",
            "HTTPS://Outlook.Office.com/WEBHOOK/abc",
            "https://outlook.office365.com/webhook/abc",
        ] {
            assert!(is_teams_connector_url(legacy), "{legacy}");
            assert_eq!(teams(&sample(), legacy)["@type"], "MessageCard");
        }
        for workflows in [
            WORKFLOWS_URL,
            "https://default123.environment.api.powerplatform.com/powerautomate/automations/direct/workflows/x/triggers/manual/paths/invoke",
            "https://outlook.office.com/mail/",
            "https://evil.example/webhook?h=outlook.office.com",
            "https://outlook.office.com.evil.example/webhook/x",
            "https://webhook.office.com/webhookb2/x",
            "not a url",
            "",
        ] {
            assert!(!is_teams_connector_url(workflows), "{workflows}");
            assert_eq!(teams(&sample(), workflows)["type"], "message");
        }
    }

    #[test]
    fn rfc3339_accepts_only_valid_timestamps() {
        for ok in [
            "2026-04-25T18:00:00.000Z",
            "2026-04-25T18:00:00Z",
            "2024-02-29t23:59:59.123456789+05:30",
            "2026-04-25T18:00:00-00:00",
        ] {
            assert!(rfc3339(ok).is_some(), "{ok}");
        }
        assert_eq!(
            rfc3339("2026-04-25t18:00:00z").as_deref(),
            Some("2026-04-25T18:00:00Z")
        );
        for bad in [
            "",
            "yesterday",
            "2026-04-25",
            "2026-04-25 18:00:00Z",
            "2026-04-25T18:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-04-25T24:00:00Z",
            "2026-04-25T18:00:00.Z",
            "2026-04-25T18:00:00.1234567890Z",
            "2026-04-25T18:00:00+0530",
            "2026-04-25T18:00:00Zjunk",
            "２０２６-04-25T18:00:00Z",
        ] {
            assert!(rfc3339(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn links_are_http_only() {
        assert!(web_link("https://x.example/a?b=c#d").is_some());
        assert!(web_link("HTTP://x.example").is_some());
        for bad in [
            "javascript:alert(1)",
            "https://",
            "https:///path",
            "ftp://x",
            "https://a b",
        ] {
            assert!(web_link(bad).is_none(), "{bad}");
        }
        assert!(web_link(&format!("https://x.example/{}", "a".repeat(LINK_MAX))).is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Arbitrary text in every string field: nothing panics, every
        /// limit holds, the subject stays one line.
        #[test]
        fn any_text_keeps_every_limit(
            summary in "\\PC{0,400}|(\\PC|[\r\n<>&@`*_]){0,3000}",
            name in "\\PC{0,300}",
            other in "(\\PC|[\r\n\u{202E}]){0,300}",
            url in "(https?://)?\\PC{0,100}",
            ts in "\\PC{0,40}|2026-04-25T18:00:00(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
            n in 0usize..40,
        ) {
            let mut a = sample();
            a.summary = summary;
            a.project_slug = Some(name.clone());
            a.project_id = other.clone();
            a.analysis_id = other.clone();
            a.timestamp = ts;
            a.url = Some(url);
            a.root_cause = Some(RootCause {
                service: Some(name.clone()),
                error_type: Some(other.clone()),
                category: None,
            });
            a.affected_services = (0..n)
                .map(|i| AffectedService {
                    name: name.clone(),
                    role: Some(other.clone()),
                    error_count: Some(i as u64),
                })
                .collect();
            a.suggested_actions = (0..n)
                .map(|i| SuggestedAction {
                    kind: Some(name.clone()),
                    action: other.clone(),
                    priority: Some(i as i64 % 3),
                })
                .collect();

            assert_slack_limits(&slack(&a));
            assert_discord_limits(&discord(&a));
            let g = google_chat(&a);
            proptest::prop_assert!(text_len(&g["text"]) <= GOOGLE_CHAT_TEXT_MAX);
            proptest::prop_assert!(
                serde_json::to_vec(&g).unwrap().len() <= GOOGLE_CHAT_MESSAGE_BYTES_MAX
            );
            for url in [WORKFLOWS_URL, LEGACY_URL] {
                let t = teams(&a, url);
                proptest::prop_assert!(
                    serde_json::to_vec(&t).unwrap().len() <= TEAMS_MESSAGE_BYTES_MAX
                );
            }
            let m = email(&a);
            proptest::prop_assert!(!m.subject.chars().any(char::is_control));
            proptest::prop_assert!(m.subject.chars().count() <= 200);
            proptest::prop_assert!(!m.html.contains("<script"));
        }
    }

    #[test]
    fn colours() {
        assert_eq!(severity_colour(Severity::Critical), 0xD32F2F);
        assert_eq!(severity_colour(Severity::High), 0xF57C00);
        assert_eq!(severity_colour(Severity::Medium), 0xFBC02D);
        assert_eq!(severity_colour(Severity::Low), 0x607D8B);
    }
}
