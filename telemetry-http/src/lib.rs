//! Actix-web routes for liveness, telemetry health and rate-limited
//! Prometheus metrics. Binds no port: the host service mounts the routes.
