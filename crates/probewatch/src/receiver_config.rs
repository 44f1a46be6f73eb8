//! The `[[receiver]]` tables: one variant per receiver type, each with exactly the settings
//! that type takes, so a setting another type uses (`chat_id` on a Slack receiver) or a typo
//! is refused when the file is read, naming the receiver and the settings it does take.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use probewatch_alerting::native::Native;
use probewatch_alerting::notify::{self, ReceiverKind};
use probewatch_alerting::template::Template;
use serde::{Deserialize, Deserializer};

/// A `[[receiver]]` table: the settings every receiver has, and those of its type.
#[derive(Debug, Clone)]
pub struct ReceiverFile {
    /// Name routes refer to.
    pub name: String,
    /// Whether resolved alerts are sent (default true).
    pub send_resolved: Option<bool>,
    /// Per-attempt timeout (default 10s).
    pub timeout: Option<String>,
    /// What `type` says (default `command` when `command` is set, else `webhook`).
    pub settings: ReceiverSettings,
}

/// A receiver's type and the settings that type takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ReceiverSettings {
    /// POST Alertmanager's webhook JSON, or a templated body, to a URL.
    Webhook(WebhookFile),
    /// Run a program with the notification on its standard input.
    Command(CommandFile),
    /// Push alerts to an external Alertmanager's API v2.
    Alertmanager(AlertmanagerFile),
    /// Email through an SMTP server.
    Email(EmailFile),
    /// A Slack incoming webhook.
    Slack(UrlFile),
    /// A Microsoft Teams workflow webhook.
    Teams(UrlFile),
    /// A Discord webhook.
    Discord(UrlFile),
    /// A WeCom (WeChat Work) group robot.
    Wecom(UrlFile),
    /// A Telegram bot writing to one chat.
    Telegram(TelegramFile),
    /// PagerDuty Events API v2.
    Pagerduty(PagerDutyFile),
    /// Opsgenie's alert API.
    Opsgenie(OpsgenieFile),
    /// A DingTalk group robot, signed when a secret is given.
    Dingtalk(SignedUrlFile),
    /// A Feishu/Lark group bot, signed when a secret is given.
    #[serde(alias = "lark")]
    Feishu(SignedUrlFile),
}

/// `type = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    /// Where to POST.
    pub url: String,
    /// The body as a Go template over the notification (default: Alertmanager's JSON).
    pub body_template: Option<String>,
    /// Extra headers, each value a Go template over the notification.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `type = "command"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandFile {
    /// Program and arguments.
    pub command: Vec<String>,
}

/// `type = "alertmanager"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerFile {
    /// Alertmanager's base URL.
    pub url: String,
    /// How often firing alerts are sent again (default 1m, as Prometheus).
    pub resend_interval: Option<String>,
}

/// `type = "email"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailFile {
    /// SMTP server as `host:port`.
    pub smarthost: String,
    /// `starttls` (default), `tls` or `none`.
    pub smtp_security: Option<String>,
    /// SMTP login.
    pub username: Option<String>,
    /// SMTP password (or `password_file`).
    pub password: Option<String>,
    /// A file holding the SMTP password.
    pub password_file: Option<PathBuf>,
    /// Sender.
    pub from: String,
    /// Recipients: a list, or one string with addresses separated by commas (as
    /// Alertmanager's `to` is written).
    #[serde(deserialize_with = "addresses")]
    pub to: Vec<String>,
}

/// `["a@x", "b@x"]` or `"a@x, b@x"`.
fn addresses<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => text
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect(),
        OneOrMany::Many(list) => list,
    })
}

/// Slack, Teams, Discord, WeCom: a webhook URL and nothing else.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlFile {
    /// The webhook URL the service gave.
    pub url: String,
}

/// DingTalk, Feishu: a webhook URL and the bot's optional signing secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedUrlFile {
    /// The webhook URL the service gave.
    pub url: String,
    /// The bot's signing secret (or `secret_file`).
    pub secret: Option<String>,
    /// A file holding the secret.
    pub secret_file: Option<PathBuf>,
}

/// `type = "telegram"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramFile {
    /// The bot's token (or `bot_token_file`).
    pub bot_token: Option<String>,
    /// A file holding the bot's token.
    pub bot_token_file: Option<PathBuf>,
    /// The chat to write to.
    pub chat_id: String,
    /// The API's base URL (a proxy, a test).
    pub api_url: Option<String>,
}

/// `type = "pagerduty"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyFile {
    /// The integration's routing key (or `routing_key_file`).
    pub routing_key: Option<String>,
    /// A file holding the routing key.
    pub routing_key_file: Option<PathBuf>,
    /// The API's base URL (a proxy, the EU region, a test).
    pub api_url: Option<String>,
}

/// `type = "opsgenie"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsgenieFile {
    /// The API integration's key (or `api_key_file`).
    pub api_key: Option<String>,
    /// A file holding the key.
    pub api_key_file: Option<PathBuf>,
    /// The API's base URL (the EU region, a test).
    pub api_url: Option<String>,
}

/// The settings every receiver has, read before its type's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonFile {
    name: String,
    send_resolved: Option<bool>,
    timeout: Option<String>,
}

impl<'de> Deserialize<'de> for ReceiverFile {
    /// Reads the common settings, then the rest as the variant `type` names (inferred from
    /// `command` or `url` when absent), so an error names the receiver and its type.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut rest = toml::Table::deserialize(deserializer)?;
        let mut common = toml::Table::new();
        for key in ["name", "send_resolved", "timeout"] {
            if let Some(value) = rest.remove(key) {
                common.insert(key.to_string(), value);
            }
        }
        if !common.contains_key("name") {
            return Err(D::Error::custom("a [[receiver]] has no name"));
        }
        let common: CommonFile = toml::Value::Table(common)
            .try_into()
            .map_err(|e| D::Error::custom(format!("a [[receiver]]: {e}")))?;
        let kind = match rest.get("type") {
            Some(toml::Value::String(kind)) => kind.clone(),
            Some(_) => {
                return Err(D::Error::custom(format!(
                    "receiver {:?}: type must be a string",
                    common.name
                )));
            }
            None if rest.contains_key("command") => "command".to_string(),
            None => "webhook".to_string(),
        };
        rest.insert("type".into(), toml::Value::String(kind.clone()));
        let settings: ReceiverSettings = toml::Value::Table(rest).try_into().map_err(|e| {
            let e = e.to_string();
            D::Error::custom(format!(
                "receiver {:?} (type = {kind:?}): {}",
                common.name,
                e.trim_end()
            ))
        })?;
        Ok(ReceiverFile {
            name: common.name,
            send_resolved: common.send_resolved,
            timeout: common.timeout,
            settings,
        })
    }
}

/// A secret given inline or in a file (trimmed), for receiver `name`'s `field`.
fn secret_of(
    name: &str,
    field: &str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
) -> anyhow::Result<Option<String>> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!("receiver {name:?}: give {field} or {field}_file, not both"),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(path)) => Ok(Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("receiver {name:?}: reading {}", path.display()))?
                .trim()
                .to_string(),
        )),
        (None, None) => Ok(None),
    }
}

/// A secret the receiver cannot work without.
fn required_secret(
    name: &str,
    field: &str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
) -> anyhow::Result<String> {
    secret_of(name, field, inline, file)?
        .with_context(|| format!("receiver {name:?} needs {field} (or {field}_file)"))
}

impl ReceiverFile {
    /// The receiver as the notifier runs it: templates parsed, secrets read, durations and
    /// addresses checked.
    pub fn resolve(&self) -> anyhow::Result<notify::Receiver> {
        let name = &self.name;
        if name.is_empty() {
            bail!("a [[receiver]] has an empty name");
        }
        let api = |given: &Option<String>, default: &str| {
            given.clone().unwrap_or_else(|| default.to_string())
        };
        let kind = match &self.settings {
            ReceiverSettings::Webhook(w) => {
                let template = |what: &str, text: &str| {
                    Template::parse(text)
                        .map_err(|e| anyhow::anyhow!("receiver {name:?}: {what}: {e}"))
                };
                ReceiverKind::Webhook {
                    url: w.url.clone(),
                    body: w
                        .body_template
                        .as_deref()
                        .map(|t| template("body_template", t))
                        .transpose()?,
                    headers: w
                        .headers
                        .iter()
                        .map(|(header, value)| Ok((header.clone(), template(header, value)?)))
                        .collect::<anyhow::Result<_>>()?,
                }
            }
            ReceiverSettings::Command(c) => {
                if c.command.is_empty() {
                    bail!("receiver {name:?}: command is empty: give a program and its arguments");
                }
                ReceiverKind::Command {
                    argv: c.command.clone(),
                }
            }
            ReceiverSettings::Alertmanager(a) => ReceiverKind::Alertmanager {
                url: a.url.clone(),
                resend_interval: crate::config::duration(
                    &format!("receiver {name:?}: resend_interval"),
                    a.resend_interval.as_deref(),
                    "1m",
                    Duration::from_secs(1),
                )?,
            },
            ReceiverSettings::Email(e) => ReceiverKind::Email(email_settings(name, e)?),
            ReceiverSettings::Slack(u) => {
                ReceiverKind::Native(Native::Slack { url: u.url.clone() })
            }
            ReceiverSettings::Teams(u) => {
                ReceiverKind::Native(Native::Teams { url: u.url.clone() })
            }
            ReceiverSettings::Discord(u) => {
                ReceiverKind::Native(Native::Discord { url: u.url.clone() })
            }
            ReceiverSettings::Wecom(u) => {
                ReceiverKind::Native(Native::WeCom { url: u.url.clone() })
            }
            ReceiverSettings::Telegram(t) => ReceiverKind::Native(Native::Telegram {
                api_url: api(&t.api_url, "https://api.telegram.org"),
                bot_token: required_secret(name, "bot_token", &t.bot_token, &t.bot_token_file)?,
                chat_id: t.chat_id.clone(),
            }),
            ReceiverSettings::Pagerduty(p) => ReceiverKind::Native(Native::PagerDuty {
                api_url: api(&p.api_url, "https://events.pagerduty.com"),
                routing_key: required_secret(
                    name,
                    "routing_key",
                    &p.routing_key,
                    &p.routing_key_file,
                )?,
            }),
            ReceiverSettings::Opsgenie(o) => ReceiverKind::Native(Native::Opsgenie {
                api_url: api(&o.api_url, "https://api.opsgenie.com"),
                api_key: required_secret(name, "api_key", &o.api_key, &o.api_key_file)?,
            }),
            ReceiverSettings::Dingtalk(s) => ReceiverKind::Native(Native::DingTalk {
                url: s.url.clone(),
                secret: secret_of(name, "secret", &s.secret, &s.secret_file)?,
            }),
            ReceiverSettings::Feishu(s) => ReceiverKind::Native(Native::Feishu {
                url: s.url.clone(),
                secret: secret_of(name, "secret", &s.secret, &s.secret_file)?,
            }),
        };
        let timeout = crate::config::duration(
            &format!("receiver {name:?}: timeout"),
            self.timeout.as_deref(),
            "10s",
            Duration::from_millis(100),
        )?;
        Ok(notify::Receiver {
            name: name.clone(),
            kind,
            timeout,
        })
    }
}

fn email_settings(name: &str, e: &EmailFile) -> anyhow::Result<notify::EmailSettings> {
    let (host, port) = e
        .smarthost
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .with_context(|| {
            format!(
                "receiver {name:?}: smarthost {:?} is not host:port",
                e.smarthost
            )
        })?;
    let security = match e.smtp_security.as_deref() {
        None | Some("starttls") => notify::SmtpSecurity::StartTls,
        Some("tls") => notify::SmtpSecurity::Tls,
        Some("none") => notify::SmtpSecurity::None,
        Some(other) => {
            bail!("receiver {name:?}: smtp_security {other:?}: expected starttls, tls or none")
        }
    };
    if e.to.is_empty() {
        bail!("receiver {name:?}: email needs to = [\"someone@example.com\"]");
    }
    Ok(notify::EmailSettings {
        host,
        port,
        security,
        username: e.username.clone(),
        password: secret_of(name, "password", &e.password, &e.password_file)?,
        from: e.from.clone(),
        to: e.to.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(to: &str) -> Result<Vec<String>, String> {
        let text = format!(
            "name = \"m\"\ntype = \"email\"\nsmarthost = \"smtp:25\"\nfrom = \"a@x\"\nto = {to}\n"
        );
        let file: ReceiverFile = toml::from_str(&text).map_err(|e| e.to_string())?;
        match file.settings {
            ReceiverSettings::Email(e) => Ok(e.to),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn email_recipients_as_a_list_or_as_alertmanager_writes_them() {
        assert_eq!(
            email("[\"a@x\", \"b@x\"]"),
            Ok(vec!["a@x".into(), "b@x".into()])
        );
        assert_eq!(email("\"a@x, b@x\""), Ok(vec!["a@x".into(), "b@x".into()]));
        assert!(email("3").is_err());
    }

    #[test]
    fn the_type_is_inferred_and_lark_is_feishu() {
        let r: ReceiverFile = toml::from_str("name = \"c\"\ncommand = [\"/bin/true\"]").expect("c");
        assert!(matches!(r.settings, ReceiverSettings::Command(_)));
        let r: ReceiverFile = toml::from_str("name = \"w\"\nurl = \"http://x\"").expect("w");
        assert!(matches!(r.settings, ReceiverSettings::Webhook(_)));
        let r: ReceiverFile =
            toml::from_str("name = \"l\"\ntype = \"lark\"\nurl = \"http://x\"").expect("l");
        assert!(matches!(r.settings, ReceiverSettings::Feishu(_)));
        let err =
            toml::from_str::<ReceiverFile>("type = \"slack\"\nurl = \"u\"").expect_err("no name");
        assert!(err.to_string().contains("has no name"), "{err}");
    }
}
