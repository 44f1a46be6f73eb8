//! Native receivers: chat and paging services in their own formats, each one variant here
//! and one formatter from the typed notification ([`GroupPayload`]), with a default message
//! that reads well without any template: Slack, Microsoft Teams, Discord, Telegram,
//! PagerDuty Events v2, Opsgenie, DingTalk, Feishu/Lark and WeCom. The services' documented
//! limits (message lengths) are kept, and DingTalk's and Feishu's request signatures are
//! made when a secret is set.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::payload::{AlertPayload, GroupPayload};

/// A native receiver's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Native {
    /// A Slack incoming webhook.
    Slack {
        /// The webhook URL.
        url: String,
    },
    /// A Microsoft Teams workflow (or incoming) webhook, sent an Adaptive Card.
    Teams {
        /// The webhook URL.
        url: String,
    },
    /// A Discord channel webhook.
    Discord {
        /// The webhook URL.
        url: String,
    },
    /// A Telegram bot's sendMessage.
    Telegram {
        /// `https://api.telegram.org` unless a proxy or a stand-in is used.
        api_url: String,
        /// The bot's token.
        bot_token: String,
        /// The chat to write to.
        chat_id: String,
    },
    /// PagerDuty Events API v2: one event per alert, deduplicated by its fingerprint.
    PagerDuty {
        /// `https://events.pagerduty.com` unless an EU or stand-in endpoint is used.
        api_url: String,
        /// The service integration's routing key.
        routing_key: String,
    },
    /// Opsgenie Alert API: create on firing, close on resolved, by alias.
    Opsgenie {
        /// `https://api.opsgenie.com` (or `https://api.eu.opsgenie.com`).
        api_url: String,
        /// An API integration's key.
        api_key: String,
    },
    /// A DingTalk robot webhook (signed when the robot has a secret).
    DingTalk {
        /// The webhook URL, with its access_token.
        url: String,
        /// The robot's signing secret (`SEC…`), if it has one.
        secret: Option<String>,
    },
    /// A Feishu or Lark custom bot webhook (signed when the bot has a secret).
    Feishu {
        /// The webhook URL.
        url: String,
        /// The bot's signing secret, if it has one.
        secret: Option<String>,
    },
    /// A WeCom (WeChat Work) group robot webhook.
    WeCom {
        /// The webhook URL, with its key.
        url: String,
    },
}

/// One HTTP request a notification becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeRequest {
    /// Where to POST.
    pub url: String,
    /// Extra headers (authorization).
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Value,
}

/// Cuts `text` to at most `max` characters, marking the cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The labels people look for first, as `probe web · host h1 · check login`.
fn where_text(a: &AlertPayload) -> String {
    ["probe", "host", "check"]
        .iter()
        .filter_map(|k| a.labels.get(*k).map(|v| format!("{k} {v}")))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// One line per alert: `FIRING CheckCritical: web login is critical (probe web · host h1)`.
fn alert_lines(p: &GroupPayload) -> Vec<String> {
    p.alerts
        .iter()
        .map(|a| {
            let place = where_text(a);
            format!(
                "{} {}: {}{}",
                a.status.to_uppercase(),
                a.name(),
                a.summary(),
                if place.is_empty() {
                    String::new()
                } else {
                    format!(" ({place})")
                }
            )
        })
        .collect()
}

/// The plain-text message: title, one line per alert, the link.
fn plain(p: &GroupPayload) -> String {
    format!("{}\n{}\n{}", p.title(), alert_lines(p).join("\n"), p.link())
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// PagerDuty's and Opsgenie's severities from the alert's `severity` label.
fn pagerduty_severity(a: &AlertPayload) -> &'static str {
    match a
        .labels
        .get("severity")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        Some("critical" | "page" | "emergency") => "critical",
        Some("warning" | "warn" | "ticket") => "warning",
        Some("info" | "none" | "low") => "info",
        _ => "error",
    }
}

fn opsgenie_priority(a: &AlertPayload) -> &'static str {
    match pagerduty_severity(a) {
        "critical" => "P1",
        "error" => "P2",
        "warning" => "P3",
        _ => "P5",
    }
}

/// `base64(HMAC-SHA256(key, message))`.
fn hmac_base64(key: &[u8], message: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(message);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// DingTalk's signature of a request at `timestamp_ms`: `base64(HMAC-SHA256(secret,
/// "<timestamp>\n<secret>"))`, sent URL-encoded beside the timestamp.
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    hmac_base64(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    )
}

/// Feishu's signature at `timestamp_s`: `base64(HMAC-SHA256(key = "<timestamp>\n<secret>",
/// message = nothing))`.
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    hmac_base64(format!("{timestamp_s}\n{secret}").as_bytes(), b"")
}

impl Native {
    /// The kind as the configuration names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Native::Slack { .. } => "slack",
            Native::Teams { .. } => "teams",
            Native::Discord { .. } => "discord",
            Native::Telegram { .. } => "telegram",
            Native::PagerDuty { .. } => "pagerduty",
            Native::Opsgenie { .. } => "opsgenie",
            Native::DingTalk { .. } => "dingtalk",
            Native::Feishu { .. } => "feishu",
            Native::WeCom { .. } => "wecom",
        }
    }

    /// The requests a notification becomes at `now_ms`, in order.
    pub fn requests(&self, p: &GroupPayload, now_ms: i64) -> Vec<NativeRequest> {
        let post = |url: String, body: Value| NativeRequest {
            url,
            headers: Vec::new(),
            body,
        };
        let firing = p.firing() > 0;
        match self {
            Native::Slack { url } => vec![post(
                url.clone(),
                json!({
                    "text": cut(&plain(p), 3000),
                    "attachments": [{
                        "color": if firing { "#d00000" } else { "#2eb886" },
                        "title": cut(&p.title(), 300),
                        "title_link": p.link(),
                        "text": cut(&alert_lines(p).join("\n"), 3000),
                        "fallback": cut(&p.title(), 300),
                    }],
                }),
            )],
            Native::Discord { url } => vec![post(
                url.clone(),
                json!({
                    "content": cut(&p.title(), 2000),
                    "embeds": [{
                        "title": cut(&p.title(), 256),
                        "url": p.link(),
                        "description": cut(&alert_lines(p).join("\n"), 4096),
                        "color": if firing { 0xd0_00_00 } else { 0x2e_b8_86 },
                    }],
                    "allowed_mentions": {"parse": []},
                }),
            )],
            Native::Teams { url } => vec![post(
                url.clone(),
                json!({
                    "type": "message",
                    "attachments": [{
                        "contentType": "application/vnd.microsoft.card.adaptive",
                        "contentUrl": null,
                        "content": {
                            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                            "type": "AdaptiveCard",
                            "version": "1.4",
                            "body": [
                                {"type": "TextBlock", "text": p.title(), "weight": "Bolder",
                                 "size": "Medium", "wrap": true,
                                 "color": if firing { "Attention" } else { "Good" }},
                                {"type": "TextBlock", "text": cut(&alert_lines(p).join("\n\n"), 20_000), "wrap": true},
                            ],
                            "actions": [{"type": "Action.OpenUrl", "title": "Open probewatch", "url": p.link()}],
                        },
                    }],
                }),
            )],
            Native::Telegram {
                api_url,
                bot_token,
                chat_id,
            } => {
                let lines: Vec<String> = alert_lines(p).iter().map(|l| html_escape(l)).collect();
                let text = format!(
                    "<b>{}</b>\n{}\n<a href=\"{}\">probewatch</a>",
                    html_escape(&p.title()),
                    lines.join("\n"),
                    html_escape(&p.link())
                );
                vec![post(
                    format!(
                        "{}/bot{bot_token}/sendMessage",
                        api_url.trim_end_matches('/')
                    ),
                    json!({
                        "chat_id": chat_id,
                        "text": cut(&text, 4096),
                        "parse_mode": "HTML",
                        "disable_web_page_preview": true,
                    }),
                )]
            }
            Native::PagerDuty {
                api_url,
                routing_key,
            } => {
                let url = format!("{}/v2/enqueue", api_url.trim_end_matches('/'));
                p.alerts
                    .iter()
                    .map(|a| {
                        let dedup_key = format!("probewatch-{}", a.fingerprint);
                        let body = if a.is_firing() {
                            json!({
                                "routing_key": routing_key,
                                "event_action": "trigger",
                                "dedup_key": dedup_key,
                                "payload": {
                                    "summary": cut(&format!("{}: {}", a.name(), a.summary()), 1024),
                                    "source": a.labels.get("host").cloned().unwrap_or_else(|| "probewatch".into()),
                                    "severity": pagerduty_severity(a),
                                    "timestamp": a.starts_at,
                                    "component": a.labels.get("probe"),
                                    "group": a.labels.get("check"),
                                    "class": a.name(),
                                    "custom_details": {"labels": a.labels, "annotations": a.annotations},
                                },
                                "client": "probewatch",
                                "client_url": p.link(),
                                "links": [{"href": p.link(), "text": "probewatch"}],
                            })
                        } else {
                            json!({
                                "routing_key": routing_key,
                                "event_action": "resolve",
                                "dedup_key": dedup_key,
                            })
                        };
                        post(url.clone(), body)
                    })
                    .collect()
            }
            Native::Opsgenie { api_url, api_key } => {
                let base = api_url.trim_end_matches('/');
                let auth = vec![("authorization".to_string(), format!("GenieKey {api_key}"))];
                p.alerts
                    .iter()
                    .map(|a| {
                        let alias = format!("probewatch-{}", a.fingerprint);
                        if a.is_firing() {
                            let tags: Vec<String> =
                                a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                            NativeRequest {
                                url: format!("{base}/v2/alerts"),
                                headers: auth.clone(),
                                body: json!({
                                    "message": cut(&format!("{}: {}", a.name(), a.summary()), 130),
                                    "alias": alias,
                                    "description": cut(&format!("{}\n{}", plain(p), serde_json::to_string(&a.annotations).unwrap_or_default()), 15_000),
                                    "tags": tags.iter().map(|t| cut(t, 50)).take(20).collect::<Vec<_>>(),
                                    "details": a.labels,
                                    "priority": opsgenie_priority(a),
                                    "source": "probewatch",
                                }),
                            }
                        } else {
                            NativeRequest {
                                url: format!(
                                    "{base}/v2/alerts/{}/close?identifierType=alias",
                                    form_alias(&alias)
                                ),
                                headers: auth.clone(),
                                body: json!({"source": "probewatch", "note": "resolved in probewatch"}),
                            }
                        }
                    })
                    .collect()
            }
            Native::DingTalk { url, secret } => {
                let mut url = url.clone();
                if let Some(secret) = secret {
                    let sign = dingtalk_sign(secret, now_ms);
                    let encoded: String =
                        form_urlencoded::byte_serialize(sign.as_bytes()).collect();
                    url.push(if url.contains('?') { '&' } else { '?' });
                    url.push_str(&format!("timestamp={now_ms}&sign={encoded}"));
                }
                let text = format!(
                    "### {}\n\n{}\n\n[probewatch]({})",
                    p.title(),
                    alert_lines(p)
                        .iter()
                        .map(|l| format!("- {l}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    p.link()
                );
                vec![post(
                    url,
                    json!({
                        "msgtype": "markdown",
                        "markdown": {"title": cut(&p.title(), 64), "text": cut(&text, 5000)},
                    }),
                )]
            }
            Native::Feishu { url, secret } => {
                let mut body = json!({
                    "msg_type": "text",
                    "content": {"text": cut(&plain(p), 4000)},
                });
                if let Some(secret) = secret {
                    let ts = now_ms / 1000;
                    body["timestamp"] = json!(ts.to_string());
                    body["sign"] = json!(feishu_sign(secret, ts));
                }
                vec![post(url.clone(), body)]
            }
            Native::WeCom { url } => {
                let text = format!(
                    "**{}**\n{}\n[probewatch]({})",
                    p.title(),
                    alert_lines(p)
                        .iter()
                        .map(|l| format!("> {l}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    p.link()
                );
                // WeCom counts bytes: 4096 at most.
                let mut content = text;
                while content.len() > 4096 {
                    content = cut(&content, content.chars().count() * 9 / 10);
                }
                vec![post(
                    url.clone(),
                    json!({"msgtype": "markdown", "markdown": {"content": content}}),
                )]
            }
        }
    }

    /// Whether a 2xx answer still says the request failed: DingTalk, Feishu and WeCom
    /// answer 200 with an error code in the body (`errcode` or `code` not 0).
    pub fn answer_error(&self, body: &str) -> Option<String> {
        if !matches!(
            self,
            Native::DingTalk { .. } | Native::Feishu { .. } | Native::WeCom { .. }
        ) {
            return None;
        }
        let v: Value = serde_json::from_str(body).ok()?;
        let code = v.get("errcode").or_else(|| v.get("code"))?.as_i64()?;
        (code != 0).then(|| {
            let message = v
                .get("errmsg")
                .or_else(|| v.get("msg"))
                .and_then(Value::as_str)
                .unwrap_or("");
            format!("the service answered code {code}: {message}")
        })
    }
}

/// An alias as one URL path segment.
fn form_alias(alias: &str) -> String {
    form_urlencoded::byte_serialize(alias.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_documented_recipes() {
        // DingTalk's documented example shape: HMAC-SHA256 of "<ms>\n<secret>" keyed by the
        // secret, base64; Feishu keys with "<s>\n<secret>" over nothing.
        let d = dingtalk_sign("SECabc", 1_700_000_000_000);
        assert_eq!(d.len(), 44);
        assert_eq!(d, hmac_base64(b"SECabc", b"1700000000000\nSECabc"));
        assert_eq!(
            feishu_sign("s", 1_700_000_000),
            hmac_base64(b"1700000000\ns", b"")
        );
        assert_ne!(feishu_sign("s", 1), feishu_sign("s", 2));
    }

    #[test]
    fn long_texts_are_cut_to_the_services_limits() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        let native = Native::WeCom { url: "u".into() };
        assert_eq!(native.answer_error(r#"{"errcode":0,"errmsg":"ok"}"#), None);
        assert!(
            native
                .answer_error(r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#)
                .is_some_and(|e| e.contains("93000"))
        );
    }
}
