//! probewatch result XML v1 (see docs/format.md).
//!
//! A streaming parser over quick-xml's borrowing reader. It accepts exactly the documented
//! grammar and refuses everything else with a position and a reason. quick-xml never reads a
//! DTD or expands entities; on top of that this parser refuses any `<!DOCTYPE>` and any entity
//! other than the five predefined ones and character references, so XXE and "billion laughs"
//! files are rejected, never expanded.

use std::borrow::Cow;

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use crate::format::{FileContext, ParseLimits};
use crate::labels::{Labels, is_valid_metric_name};
use crate::model::{CheckResult, Metric, ProbeResult, Status, TimeSource};
use crate::reject::{Reject, RejectKind};
use crate::time::parse_time_ms;

pub(super) fn parse(
    input: &[u8],
    file: FileContext<'_>,
    limits: &ParseLimits,
) -> Result<Vec<ProbeResult>, Reject> {
    if input.is_empty() {
        return Err(Reject::new(
            RejectKind::Empty,
            "file is empty (0 bytes): nothing to ingest; a probe must write a complete document",
        ));
    }
    let text = std::str::from_utf8(input).map_err(|e| {
        Reject::at(
            RejectKind::Encoding,
            input,
            e.valid_up_to(),
            "invalid UTF-8 byte sequence: result files must be UTF-8",
        )
    })?;
    let bom = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let text = &text[bom..];
    if text.trim().is_empty() {
        return Err(Reject::new(
            RejectKind::Empty,
            "file holds only whitespace: nothing to ingest; a probe must write a complete document",
        ));
    }
    let mut parser = Parser {
        input,
        bom,
        reader: Reader::from_str(text),
        limits,
        file,
        event_start: 0,
        open: Vec::new(),
        items: 0,
    };
    parser.document()
}

struct Parser<'a, 'l> {
    /// The whole file, for line/column computation.
    input: &'a [u8],
    /// Length of a skipped byte-order mark: reader offsets start after it.
    bom: usize,
    reader: Reader<&'a [u8]>,
    limits: &'l ParseLimits,
    file: FileContext<'l>,
    /// Offset (in the reader's input) where the last event started.
    event_start: usize,
    /// Names of the elements that are open, for the "truncated" message.
    open: Vec<&'static str>,
    /// Checks plus metrics so far.
    items: usize,
}

/// An element start, as the parser needs it.
struct Element<'a> {
    start: BytesStart<'a>,
    /// True for `<x/>`: no children and no end event follow.
    empty: bool,
    /// Offset of its `<`.
    offset: usize,
}

impl<'a> Parser<'a, '_> {
    fn reject(&self, kind: RejectKind, offset: usize, detail: impl Into<String>) -> Reject {
        Reject::at(kind, self.input, self.bom + offset, detail)
    }

    /// The next event that matters: comments and processing instructions are skipped.
    fn next(&mut self) -> Result<Event<'a>, Reject> {
        loop {
            self.event_start = usize::try_from(self.reader.buffer_position()).unwrap_or(0);
            let event = match self.reader.read_event() {
                Ok(event) => event,
                Err(err) => return Err(self.syntax_error(&err)),
            };
            match event {
                Event::Comment(_) | Event::PI(_) => continue,
                Event::DocType(_) => {
                    return Err(self.reject(
                        RejectKind::Dtd,
                        self.event_start,
                        "<!DOCTYPE> is not allowed: result files may not declare a DTD or \
                         entities (nothing is ever expanded or fetched)",
                    ));
                }
                Event::Eof if !self.open.is_empty() => {
                    let path = self.open.join(">");
                    return Err(self.reject(
                        RejectKind::Syntax,
                        self.event_start,
                        format!(
                            "unexpected end of file inside <{path}>: the file is truncated \
                             (was it read before the probe finished writing it?)"
                        ),
                    ));
                }
                event => return Ok(event),
            }
        }
    }

    fn syntax_error(&self, err: &quick_xml::Error) -> Reject {
        let offset = usize::try_from(self.reader.error_position()).unwrap_or(0);
        let detail = match err {
            quick_xml::Error::Syntax(e) => {
                format!("malformed XML: {e} (the file may be truncated)")
            }
            e => format!("malformed XML: {e}"),
        };
        self.reject(RejectKind::Syntax, offset, detail)
    }

    fn document(&mut self) -> Result<Vec<ProbeResult>, Reject> {
        let mut results = None;
        loop {
            let offset = self.event_start;
            match self.next()? {
                Event::Decl(decl) => {
                    if let Some(Ok(encoding)) = decl.encoding() {
                        let encoding = encoding.to_ascii_lowercase();
                        if encoding != "utf-8" && encoding != "utf8" {
                            return Err(self.reject(
                                RejectKind::Encoding,
                                self.event_start,
                                format!(
                                    "the XML declaration names encoding {encoding:?}; \
                                     only UTF-8 is supported"
                                ),
                            ));
                        }
                    }
                }
                Event::Text(text) if text.trim_ascii().is_empty() => {}
                Event::Start(start) if results.is_none() => {
                    let offset = self.event_start;
                    let root = Element {
                        start,
                        empty: false,
                        offset,
                    };
                    results = Some(self.root(root)?);
                }
                Event::Empty(start) if results.is_none() => {
                    let offset = self.event_start;
                    let root = Element {
                        start,
                        empty: true,
                        offset,
                    };
                    results = Some(self.root(root)?);
                }
                Event::Start(_) | Event::Empty(_) => {
                    return Err(self.reject(
                        RejectKind::Schema,
                        self.event_start,
                        "a second root element: a file holds one <probe> or one <results>",
                    ));
                }
                Event::Eof => {
                    return results.ok_or_else(|| {
                        self.reject(
                            RejectKind::Schema,
                            offset,
                            "no root element: expected <probe> or <results>",
                        )
                    });
                }
                other => return Err(self.unexpected(&other, "outside the root element")),
            }
        }
    }

    fn unexpected(&self, event: &Event<'_>, place: &str) -> Reject {
        let what = match event {
            Event::Text(t) => {
                let snippet: String = t.chars().take(40).collect();
                format!("unexpected text {:?} {place}", snippet.trim())
            }
            Event::CData(_) => format!("unexpected CDATA {place}"),
            Event::GeneralRef(r) => format!("unexpected entity reference &{}; {place}", &**r),
            Event::End(e) => format!("unexpected end tag </{}> {place}", e.name().as_ref()),
            Event::Decl(_) => format!("XML declaration {place}: it must come first"),
            _ => format!("unexpected content {place}"),
        };
        self.reject(RejectKind::Schema, self.event_start, what)
    }

    fn root(&mut self, root: Element<'a>) -> Result<Vec<ProbeResult>, Reject> {
        match root.start.name().as_ref() {
            "probe" => Ok(vec![self.probe(root)?]),
            "results" => {
                let attrs = self.attrs(&root, "results")?;
                attrs.finish(self)?;
                let mut probes = Vec::new();
                if root.empty {
                    return Ok(probes);
                }
                self.open.push("results");
                loop {
                    match self.next()? {
                        Event::Text(text) if text.trim_ascii().is_empty() => {}
                        Event::Start(start) | Event::Empty(start)
                            if start.name().as_ref() != "probe" =>
                        {
                            return Err(self.unknown_element(&start, "<results>", "<probe>"));
                        }
                        Event::Start(start) => {
                            let offset = self.event_start;
                            probes.push(self.probe(Element {
                                start,
                                empty: false,
                                offset,
                            })?);
                        }
                        Event::Empty(start) => {
                            let offset = self.event_start;
                            probes.push(self.probe(Element {
                                start,
                                empty: true,
                                offset,
                            })?);
                        }
                        Event::End(_) => break,
                        other => return Err(self.unexpected(&other, "inside <results>")),
                    }
                    if probes.len() > self.limits.max_probes {
                        return Err(self.reject(
                            RejectKind::TooLarge,
                            self.event_start,
                            format!(
                                "more than {} <probe> elements in one file",
                                self.limits.max_probes
                            ),
                        ));
                    }
                }
                self.open.pop();
                Ok(probes)
            }
            _ => Err(self.unknown_element(&root.start, "the document", "<probe> or <results>")),
        }
    }

    fn unknown_element(&self, start: &BytesStart<'_>, parent: &str, allowed: &str) -> Reject {
        let name = start.name().as_ref().to_string();
        self.reject(
            RejectKind::Schema,
            self.event_start,
            format!("unknown element <{name}> in {parent}: expected {allowed}"),
        )
    }

    fn probe(&mut self, element: Element<'a>) -> Result<ProbeResult, Reject> {
        let mut attrs = self.attrs(&element, "probe")?;
        let probe = attrs.require(self, "name")?.into_owned();
        self.check_name(&element, "probe name", &probe)?;
        let host = attrs.take("host").unwrap_or_default().into_owned();
        self.check_name(&element, "host", &host)?;
        let (time_ms, time_source) = match attrs.take("time") {
            Some(text) => (self.time(&element, &text)?, TimeSource::Declared),
            None => (self.file.mtime_ms, TimeSource::FileMtime),
        };
        let interval_ms = match attrs.take("interval") {
            Some(text) => Some(self.interval(&element, &text)?),
            None => None,
        };
        attrs.finish(self)?;
        let mut result = ProbeResult {
            probe,
            host,
            time_ms,
            time_source,
            interval_ms,
            checks: Vec::new(),
            metrics: Vec::new(),
        };
        if element.empty {
            return Ok(result);
        }
        self.open.push("probe");
        loop {
            let event = self.next()?;
            let (start, empty) = match event {
                Event::Text(text) if text.trim_ascii().is_empty() => continue,
                Event::End(_) => break,
                Event::Start(start) => (start, false),
                Event::Empty(start) => (start, true),
                other => return Err(self.unexpected(&other, "inside <probe>")),
            };
            let child = Element {
                start,
                empty,
                offset: self.event_start,
            };
            self.items += 1;
            if self.items > self.limits.max_items {
                return Err(self.reject(
                    RejectKind::TooLarge,
                    child.offset,
                    format!(
                        "more than {} checks and metrics in one file",
                        self.limits.max_items
                    ),
                ));
            }
            match child.start.name().as_ref() {
                "check" => {
                    let check = self.check(child)?;
                    result.push_check(check).map_err(|message| {
                        self.reject(RejectKind::Schema, self.event_start, message)
                    })?;
                }
                "metric" => {
                    let offset = child.offset;
                    let metric = self.metric(child)?;
                    result
                        .push_metric(metric)
                        .map_err(|message| self.reject(RejectKind::Schema, offset, message))?;
                }
                _ => {
                    return Err(self.unknown_element(
                        &child.start,
                        "<probe>",
                        "<check> or <metric>",
                    ));
                }
            }
        }
        self.open.pop();
        Ok(result)
    }

    fn check(&mut self, element: Element<'a>) -> Result<CheckResult, Reject> {
        let mut attrs = self.attrs(&element, "check")?;
        let name = attrs.require(self, "name")?.into_owned();
        self.check_name(&element, "check name", &name)?;
        let status_text = attrs.require(self, "status")?;
        let status = Status::parse(&status_text).ok_or_else(|| {
            self.reject(
                RejectKind::Value,
                element.offset,
                format!(
                    "check {name:?}: unknown status {status_text:?}: expected ok, warning, \
                     critical, unknown or 0-3"
                ),
            )
        })?;
        let duration_seconds = match attrs.take("duration") {
            Some(text) => {
                let value = parse_float(&text).filter(|d| d.is_finite() && *d >= 0.0);
                Some(value.ok_or_else(|| {
                    self.reject(
                        RejectKind::Value,
                        element.offset,
                        format!(
                            "check {name:?}: duration {text:?} is not a number of seconds >= 0"
                        ),
                    )
                })?)
            }
            None => None,
        };
        attrs.finish(self)?;
        let message = if element.empty {
            String::new()
        } else {
            self.check_text(&name)?
        };
        Ok(CheckResult {
            name,
            status,
            duration_seconds,
            message,
        })
    }

    /// The text content of a `<check>`: text, CDATA and predefined or character references.
    fn check_text(&mut self, check: &str) -> Result<String, Reject> {
        self.open.push("check");
        let mut message = String::new();
        loop {
            match self.next()? {
                Event::Text(text) => message.push_str(&text.xml10_content()),
                Event::CData(data) => message.push_str(&data.xml10_content()),
                Event::GeneralRef(reference) => {
                    let c = self.resolve_reference(&reference)?;
                    message.push(c);
                }
                Event::End(_) => break,
                Event::Start(start) | Event::Empty(start) => {
                    return Err(self.unknown_element(
                        &start,
                        &format!("<check name={check:?}>"),
                        "only text",
                    ));
                }
                other => return Err(self.unexpected(&other, "inside <check>")),
            }
        }
        self.open.pop();
        Ok(message.trim().to_string())
    }

    fn resolve_reference(&self, reference: &BytesRef<'_>) -> Result<char, Reject> {
        let name: &str = reference;
        let resolved = match reference.resolve_char_ref() {
            Ok(Some(c)) => Some(c),
            Ok(None) => match name {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "apos" => Some('\''),
                "quot" => Some('"'),
                _ => None,
            },
            Err(_) => {
                return Err(self.reject(
                    RejectKind::Value,
                    self.event_start,
                    format!("invalid character reference &{name};"),
                ));
            }
        };
        resolved.ok_or_else(|| {
            self.reject(
                RejectKind::Dtd,
                self.event_start,
                format!(
                    "undefined entity &{name};: only &lt; &gt; &amp; &apos; &quot; and character \
                     references are allowed (entities are never expanded)"
                ),
            )
        })
    }

    fn metric(&mut self, element: Element<'a>) -> Result<Metric, Reject> {
        let mut attrs = self.attrs(&element, "metric")?;
        let name = attrs.require(self, "name")?.into_owned();
        if !is_valid_metric_name(&name) {
            return Err(self.reject(
                RejectKind::Value,
                element.offset,
                format!(
                    "invalid metric name {name:?}: metric names must match \
                     [a-zA-Z_:][a-zA-Z0-9_:]* (no spaces, dots or dashes)"
                ),
            ));
        }
        let value_text = attrs.require(self, "value")?;
        let value = parse_float(&value_text).ok_or_else(|| {
            self.reject(
                RejectKind::Value,
                element.offset,
                format!("metric {name:?}: value {value_text:?} is not a number"),
            )
        })?;
        attrs.finish(self)?;
        let mut labels = Labels::new();
        if !element.empty {
            self.open.push("metric");
            loop {
                let (start, empty) = match self.next()? {
                    Event::Text(text) if text.trim_ascii().is_empty() => continue,
                    Event::End(_) => break,
                    Event::Start(start) => (start, false),
                    Event::Empty(start) => (start, true),
                    other => return Err(self.unexpected(&other, "inside <metric>")),
                };
                let label = Element {
                    start,
                    empty,
                    offset: self.event_start,
                };
                if label.start.name().as_ref() != "label" {
                    return Err(self.unknown_element(
                        &label.start,
                        &format!("<metric name={name:?}>"),
                        "<label>",
                    ));
                }
                self.label(label, &name, &mut labels)?;
            }
            self.open.pop();
        }
        Ok(Metric {
            name,
            labels,
            value,
        })
    }

    fn label(
        &mut self,
        element: Element<'a>,
        metric: &str,
        labels: &mut Labels,
    ) -> Result<(), Reject> {
        let mut attrs = self.attrs(&element, "label")?;
        let name = attrs.require(self, "name")?.into_owned();
        let value = attrs.require(self, "value")?.into_owned();
        attrs.finish(self)?;
        if !element.empty {
            loop {
                match self.next()? {
                    Event::Text(text) if text.trim_ascii().is_empty() => {}
                    Event::End(_) => break,
                    other => return Err(self.unexpected(&other, "inside <label>")),
                }
            }
        }
        if labels.len() >= self.limits.max_labels {
            return Err(self.reject(
                RejectKind::TooLarge,
                element.offset,
                format!(
                    "metric {metric:?} has more than {} labels",
                    self.limits.max_labels
                ),
            ));
        }
        labels.insert(name, value).map_err(|e| {
            self.reject(
                RejectKind::Value,
                element.offset,
                format!("metric {metric:?}: {e}"),
            )
        })
    }

    /// Reads an element's attributes, unescaping values (predefined entities only).
    /// Values borrow from the input unless unescaping changed them.
    fn attrs<'e>(&self, element: &'e Element<'a>, tag: &'static str) -> Result<Attrs<'e>, Reject> {
        let mut list = Vec::new();
        for attr in element.start.attributes() {
            let attr = attr.map_err(|e| {
                self.reject(
                    RejectKind::Syntax,
                    element.offset,
                    format!("malformed attribute in <{tag}>: {e}"),
                )
            })?;
            let key: &'e str = attr.key.0;
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| {
                    self.reject(
                        RejectKind::Dtd,
                        element.offset,
                        format!(
                            "attribute {key:?} of <{tag}>: {e}: only predefined entities and \
                         character references are allowed"
                        ),
                    )
                })?;
            if value.len() > self.limits.max_value_bytes {
                return Err(self.reject(
                    RejectKind::TooLarge,
                    element.offset,
                    format!(
                        "attribute {key:?} of <{tag}> is {} bytes long (limit {})",
                        value.len(),
                        self.limits.max_value_bytes
                    ),
                ));
            }
            list.push((key, value));
        }
        Ok(Attrs {
            list,
            tag,
            offset: element.offset,
        })
    }

    /// Probe, host and check names: shown everywhere and used as label values, so no control
    /// characters.
    fn check_name(&self, element: &Element<'_>, what: &str, value: &str) -> Result<(), Reject> {
        if value.chars().any(char::is_control) {
            return Err(self.reject(
                RejectKind::Value,
                element.offset,
                format!("{what} {value:?} contains control characters"),
            ));
        }
        Ok(())
    }

    fn time(&self, element: &Element<'_>, text: &str) -> Result<i64, Reject> {
        parse_time_ms(text).ok_or_else(|| {
            self.reject(
                RejectKind::Value,
                element.offset,
                format!(
                    "time {text:?} is neither an RFC 3339 timestamp with a UTC offset \
                     (2026-11-23T18:00:00+08:00) nor Unix seconds"
                ),
            )
        })
    }

    fn interval(&self, element: &Element<'_>, text: &str) -> Result<i64, Reject> {
        humantime::parse_duration(text.trim())
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                self.reject(
                    RejectKind::Value,
                    element.offset,
                    format!("interval {text:?} is not a positive duration such as 60s or 5m"),
                )
            })
    }
}

/// Attributes of one element, taken one by one so that leftovers are reported as unknown.
struct Attrs<'e> {
    list: Vec<(&'e str, Cow<'e, str>)>,
    tag: &'static str,
    offset: usize,
}

impl<'e> Attrs<'e> {
    fn take(&mut self, key: &str) -> Option<Cow<'e, str>> {
        let at = self.list.iter().position(|(k, _)| *k == key)?;
        Some(self.list.swap_remove(at).1)
    }

    fn require(&mut self, parser: &Parser<'_, '_>, key: &str) -> Result<Cow<'e, str>, Reject> {
        self.take(key).ok_or_else(|| {
            let others: Vec<&str> = self.list.iter().map(|(k, _)| *k).collect();
            let hint = if others.is_empty() {
                String::new()
            } else {
                format!(" (it has {others:?}: a typo?)")
            };
            parser.reject(
                RejectKind::Schema,
                self.offset,
                format!(
                    "<{}> is missing the required attribute {key:?}{hint}",
                    self.tag
                ),
            )
        })
    }

    /// Refuses attributes nobody took, except namespace declarations.
    fn finish(self, parser: &Parser<'_, '_>) -> Result<(), Reject> {
        match self
            .list
            .iter()
            .find(|(k, _)| *k != "xmlns" && !k.starts_with("xmlns:"))
        {
            Some((key, _)) => Err(parser.reject(
                RejectKind::Schema,
                self.offset,
                format!("unknown attribute {key:?} on <{}>", self.tag),
            )),
            None => Ok(()),
        }
    }
}

/// A float as Prometheus writes them: decimal, exponent, `NaN`, `+Inf`, `-Inf` (any case).
pub(crate) fn parse_float(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    text.parse::<f64>().ok()
}
