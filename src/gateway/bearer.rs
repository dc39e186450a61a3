//! Taking the token from `Authorization: Bearer` only (RFC 6750 §2.1).

use pingora::http::RequestHeader;

/// What the request carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No Authorization header, or another scheme.
    Missing,
    /// Present but unusable; the text says why.
    Malformed(&'static str),
    Token(&'a str),
}

/// Longest token accepted; refgate's own are 48 characters.
const MAX_TOKEN: usize = 4096;

pub fn extract(request: &RequestHeader) -> Bearer<'_> {
    let mut values = request.headers.get_all(http::header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Bearer::Missing,
        (Some(_), Some(_)) => return Bearer::Malformed("more than one Authorization header"),
        (Some(v), None) => v,
    };
    let Ok(text) = value.to_str() else {
        return Bearer::Malformed("the Authorization header is not visible ASCII");
    };
    let (scheme, rest) = match text.split_once(' ') {
        Some((s, r)) => (s, r),
        None => (text, ""),
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Bearer::Missing;
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() {
        return Bearer::Malformed("Bearer without a token");
    }
    // b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body = token.trim_end_matches('=');
    let valid = token.len() <= MAX_TOKEN
        && !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !valid {
        return Bearer::Malformed("the bearer token is not a valid b64token");
    }
    Bearer::Token(token)
}

/// Whether the query has an `access_token` parameter, by its decoded name
/// (`access%5Ftoken` is the same parameter to whoever reads the query).
pub fn query_has_token(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split(['&', ';']).any(|pair| {
            let name = pair.split('=').next().unwrap_or(pair);
            percent_encoding::percent_decode_str(name).decode_utf8_lossy() == "access_token"
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: &[&str], uri: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        for a in auth {
            r.append_header("authorization", *a).unwrap();
        }
        r
    }

    #[test]
    fn bearer_forms() {
        assert_eq!(extract(&request(&[], "/")), Bearer::Missing);
        assert_eq!(extract(&request(&["Basic abc"], "/")), Bearer::Missing);
        assert_eq!(
            extract(&request(&["Bearer rgat_x"], "/")),
            Bearer::Token("rgat_x")
        );
        assert_eq!(
            extract(&request(&["bearer rgat_x"], "/")),
            Bearer::Token("rgat_x")
        );
        assert!(matches!(
            extract(&request(&["Bearer"], "/")),
            Bearer::Malformed(_)
        ));
        assert!(matches!(
            extract(&request(&["Bearer   "], "/")),
            Bearer::Malformed(_)
        ));
        assert!(matches!(
            extract(&request(&["Bearer a b"], "/")),
            Bearer::Malformed(_)
        ));
        assert!(matches!(
            extract(&request(&["Bearer a", "Bearer b"], "/")),
            Bearer::Malformed(_)
        ));
        for query in [
            "access_token=abc",
            "a=1&access%5Ftoken=abc",
            "%61ccess_token",
            "a;access_token=x",
        ] {
            assert!(query_has_token(Some(query)), "{query}");
        }
        for query in ["my_access_token=1&access_tokens=2", "a=access_token"] {
            assert!(!query_has_token(Some(query)), "{query}");
        }
        assert!(!query_has_token(None));
    }
}
