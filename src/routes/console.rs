//! `GET /console` (contract §12): the operator's live console, served
//! whenever the admin API is enabled (`CALLBRIDGE_ADMIN_TOKEN`; 404
//! otherwise), in and outside `--dev`. The page holds no data: it asks for
//! the admin token (kept in the tab's `sessionStorage`) and reads
//! `GET /api/console/stream` with it. It is built from `clients/js/console/`
//! (bundled into `console_page.html` by the package's `build:console-page`
//! script, checked by `scripts/test-js.sh`) and embedded in the binary.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use warp::http::header::{self, HeaderValue};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::app::App;
use crate::error::ApiError;
use crate::http::{reply, with_app};

/// The page, built from `clients/js/console/` (see the module's note).
const PAGE: &str = include_str!("console_page.html");

pub(super) fn route(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("console")
        .and(warp::get())
        .and(with_app(app))
        .map(|app: Arc<App>| reply(page(&app)))
}

/// The page's policy: its one inline script (allowed by its hash, so no
/// other script can run even if something slipped into the page), inline
/// styles, and connections to this origin only (the stream); no frames,
/// no forms posting anywhere, no base URL.
fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let script = inline_script(PAGE);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, script.as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        )
    })
}

/// The text of the page's one `<script>` element (what the hash covers).
fn inline_script(page: &str) -> &str {
    let start = page.find("<script>").map_or(0, |i| i + "<script>".len());
    let end = page[start..]
        .find("</script>")
        .map_or(page.len(), |i| start + i);
    &page[start..end]
}

fn page(app: &App) -> Result<Response, ApiError> {
    if app.config.admin_token.is_none() {
        return Err(ApiError::NotFound(
            "/console (it is served when CALLBRIDGE_ADMIN_TOKEN is set)",
        ));
    }
    let mut res = warp::reply::html(PAGE).into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(csp()).expect("the policy is ASCII"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_one_inline_script_and_the_policy_names_its_hash() {
        assert_eq!(PAGE.matches("<script").count(), 1, "one script element");
        let script = inline_script(PAGE);
        assert!(!script.is_empty() && !script.contains("</script"));
        assert!(csp().contains("script-src 'sha256-"), "{}", csp());
        assert!(!csp().contains("unsafe-eval"));
    }
}
