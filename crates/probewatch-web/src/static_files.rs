//! The dashboard's CSS, JavaScript, icon and plotly.js, compiled into the binary so the
//! dashboard works offline.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// `GET /static/app.css`
pub(crate) async fn css() -> Response {
    static_file("text/css; charset=utf-8", include_str!("../static/app.css"))
}

/// `GET /static/app.js`
pub(crate) async fn js() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../static/app.js"),
    )
}

/// `GET /favicon.ico` (an SVG; browsers ask for this path whatever the page says).
pub(crate) async fn favicon() -> Response {
    static_file("image/svg+xml", include_str!("../static/favicon.svg"))
}

/// plotly.js as the `plotly` crate ships it (the repository carries no copy), and its
/// gzipped form, made on first use.
struct PlotlyJs {
    /// Both are shared buffers: a response clones a reference, not megabytes.
    plain: axum::body::Bytes,
    gzip: axum::body::Bytes,
}

static PLOTLY_JS: std::sync::LazyLock<PlotlyJs> = std::sync::LazyLock::new(|| {
    let plain = plotly_source();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let gzip = std::io::Write::write_all(&mut encoder, plain.as_bytes())
        .and_then(|()| encoder.finish())
        .unwrap_or_default();
    PlotlyJs {
        plain: plain.into(),
        gzip: gzip.into(),
    }
});

/// The plotly.js source out of the `<script>` tags the crate wraps it in.
fn plotly_source() -> String {
    let all = plotly::Plot::offline_js_sources();
    let open = "<script type=\"text/javascript\">";
    let Some(start) = all.find(open).map(|i| i + open.len()) else {
        return String::new();
    };
    let end = all[start..]
        .find("</script>")
        .map_or(all.len(), |e| start + e);
    all[start..end].to_string()
}

/// `GET /static/plotly.min.js`: cached for a day and revalidated by ETag; gzipped for
/// clients that accept it (4.6 MB becomes about 1.4 MB).
pub(crate) async fn plotly_js(headers: axum::http::HeaderMap) -> Response {
    const ETAG: &str = "\"plotly-0.14.1\"";
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == ETAG.as_bytes())
    {
        return axum::http::StatusCode::NOT_MODIFIED.into_response();
    }
    let js = &*PLOTLY_JS;
    let gzip_ok = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let common = [
        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
        (header::CACHE_CONTROL, "public, max-age=86400"),
        (header::ETAG, ETAG),
        (header::VARY, "accept-encoding"),
    ];
    if gzip_ok && !js.gzip.is_empty() {
        return (
            common,
            [(header::CONTENT_ENCODING, "gzip")],
            js.gzip.clone(),
        )
            .into_response();
    }
    (common, js.plain.clone()).into_response()
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}
