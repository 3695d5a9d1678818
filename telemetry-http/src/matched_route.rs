//! The route pattern a request matched, with the server span names made of it,
//! interned once per pattern for the life of the process.
//!
//! Both middlewares need the pattern (`/tasks/{id}`): the metrics as a label,
//! the server span as `http.route` and in its name (`GET /tasks/{id}`). actix
//! gives it only as a fresh `String` per request (`match_pattern`), and a span
//! name must be `'static` or owned, so without interning every request would
//! copy the pattern twice and format its name. The interned patterns are the
//! application's own: `match_pattern` joins the patterns of the scopes and the
//! resource a path matched, so there are as many as the application registered
//! resources, never more, whatever clients send. Each is kept, with its names,
//! for the life of the process.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

use actix_web::HttpMessage as _;
use actix_web::dev::ServiceRequest;

use crate::http_metrics::KNOWN_METHODS;

/// A route pattern and the span names of requests that matched it.
#[derive(Debug)]
pub(crate) struct Route {
    pattern: &'static str,
    /// `{method} {pattern}` for each of [`KNOWN_METHODS`], in its order, then
    /// `HTTP {pattern}` for any other method.
    names: [&'static str; KNOWN_METHODS.len() + 1],
}

impl Route {
    fn new(pattern: &str) -> Self {
        let leak = |text: String| -> &'static str { Box::leak(text.into_boxed_str()) };
        let mut names = [""; KNOWN_METHODS.len() + 1];
        for (name, method) in names.iter_mut().zip(KNOWN_METHODS) {
            *name = leak(format!("{method} {pattern}"));
        }
        names[KNOWN_METHODS.len()] = leak(format!("HTTP {pattern}"));
        Self {
            pattern: leak(pattern.to_owned()),
            names,
        }
    }

    /// The pattern, as actix wrote it (`/tasks/{id}`).
    pub(crate) fn pattern(&self) -> &'static str {
        self.pattern
    }

    /// The server span name for the method at `known` in [`KNOWN_METHODS`], or
    /// for a method outside them.
    pub(crate) fn span_name(&self, known: Option<usize>) -> &'static str {
        self.names[known.unwrap_or(KNOWN_METHODS.len())]
    }
}

/// Every pattern interned so far, shared by the workers.
static ROUTES: LazyLock<Mutex<HashMap<&'static str, &'static Route>>> =
    LazyLock::new(Mutex::default);

thread_local! {
    /// This worker's view of [`ROUTES`], read without a lock.
    static LOCAL_ROUTES: RefCell<HashMap<&'static str, &'static Route>> =
        RefCell::new(HashMap::new());
}

/// The interned route of `pattern`, made on its first request.
fn intern(pattern: &str) -> &'static Route {
    if let Some(route) = LOCAL_ROUTES.with_borrow(|routes| routes.get(pattern).copied()) {
        return route;
    }
    let route = {
        // A panic elsewhere while holding the lock leaves the map whole: each
        // insert is one call.
        let mut routes = ROUTES.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(route) = routes.get(pattern) {
            *route
        } else {
            let route: &'static Route = Box::leak(Box::new(Route::new(pattern)));
            routes.insert(route.pattern, route);
            route
        }
    };
    LOCAL_ROUTES.with_borrow_mut(|routes| routes.insert(route.pattern, route));
    route
}

/// The route a request matched, looked up once per request and kept in its
/// extensions: actix finds it by matching the path against the whole resource
/// map again, which costs more than the span that records it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatchedRoute(pub(crate) &'static Route);

impl MatchedRoute {
    /// The request's route, from its extensions when an outer middleware
    /// looked it up already; `None` when no resource matched.
    pub(crate) fn resolve(req: &ServiceRequest) -> Option<Self> {
        if let Some(known) = req.extensions().get::<Option<Self>>() {
            return *known;
        }
        let route = req.match_pattern().map(|pattern| Self(intern(&pattern)));
        req.extensions_mut().insert(route);
        route
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_is_interned_once_with_a_name_per_method() {
        let route = intern("/interned/{id}");
        assert!(std::ptr::eq(route, intern("/interned/{id}")));
        assert_eq!(route.pattern(), "/interned/{id}");
        let get = KNOWN_METHODS.iter().position(|m| *m == "GET");
        assert_eq!(route.span_name(get), "GET /interned/{id}");
        assert_eq!(route.span_name(None), "HTTP /interned/{id}");
    }

    #[test]
    fn another_thread_gets_the_same_route() {
        let here = intern("/shared");
        let there = std::thread::spawn(|| intern("/shared") as *const Route as usize)
            .join()
            .unwrap();
        assert_eq!(here as *const Route as usize, there);
    }
}
