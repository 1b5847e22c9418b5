//! The OpenAPI 3.1 document of every public endpoint (SPEC §4), merged from the gateway's and the
//! order service's routers, served at `/openapi.json` with a Swagger UI at `/docs` whose assets are
//! compiled into the binary, so the docs render with no internet access.

use std::sync::OnceLock;

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

use crate::config::ProxyConfig;
use crate::gateway::auth::public::PublicPaths;
use crate::http::ApiError;
use crate::{gateway, order, print, shipping};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "forma",
        description = "Shopify orders in, print jobs out to the farm, parcels shipped, orders fulfilled.",
    ),
    tags(
        (name = "health", description = "Liveness, readiness, health and metrics"),
        (name = "queues", description = "The event queue dashboard's data"),
    ),
    components(schemas(crate::http::ErrorBody, crate::events::bus::JobState))
)]
struct ApiInfo;

/// The merged document, independent of the role (it is what `forma openapi` writes).
pub fn document() -> Document {
    let mut doc = ApiInfo::openapi();
    doc.info.version = crate::VERSION.to_owned();
    let (_, gateway) = gateway::api_routes().split_for_parts();
    let (_, order) = order::api_routes().split_for_parts();
    let (_, print) = print::api_routes().split_for_parts();
    let (_, shipping) = shipping::api_routes().split_for_parts();
    doc.merge(gateway);
    doc.merge(order);
    doc.merge(print);
    doc.merge(shipping);
    declare_authentication(&mut doc);
    doc
}

/// Every operation outside the default public paths needs the session cookie or a bearer token
/// (SPEC §5.1, §5.2); the docs UI's "Authorize" then knows both.
fn declare_authentication(doc: &mut Document) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            "forma.sid",
            "The session cookie set by POST /api/v1/auth/login",
        ))),
    );
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some("An access token from POST /api/v1/auth/token"))
                .build(),
        ),
    );
    let public = PublicPaths::new(&ProxyConfig::default().public_paths);
    let signed_in = vec![
        SecurityRequirement::new("session", Vec::<String>::new()),
        SecurityRequirement::new("bearer", Vec::<String>::new()),
    ];
    for (path, item) in doc.paths.paths.iter_mut() {
        let security = if public.matches(path) {
            Vec::new()
        } else {
            signed_in.clone()
        };
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
        {
            operation.security = Some(security.clone());
            declare_common_errors(operation, !security.is_empty());
        }
    }
}

/// The errors any operation can answer besides its own, all in the §4 shape, declared once here
/// rather than on every handler: 401 without a session (signed-in operations), 429 from the
/// gateway's rate limits, 400 for a malformed parameter, and for operations with a body 413 (over
/// the body limit) and 415 (not JSON). An operation's own description of a status wins.
fn declare_common_errors(operation: &mut utoipa::openapi::path::Operation, signed_in: bool) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let has_body = operation.request_body.is_some();
    let mut common = vec![("429", "Too many requests (rate limit); see Retry-After")];
    if signed_in {
        common.push(("401", "Not signed in"));
    }
    if has_parameters || has_body {
        common.push(("400", "A parameter or the body is malformed"));
    }
    if has_body {
        common.push(("413", "The body is over the size limit"));
        common.push(("415", "The body is not JSON"));
    }
    for (status, description) in common {
        if operation.responses.responses.contains_key(status) {
            continue;
        }
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        operation
            .responses
            .responses
            .insert(status.to_owned(), response.into());
    }
}

/// The document as committed at `openapi/openapi.json`: pretty JSON with a trailing newline.
pub fn document_json() -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&document())? + "\n")
}

/// `GET /openapi.json` and the docs UI at `GET /docs`. The document is made on its first
/// request, not at start-up: held as a structure it is megabytes of an idle process's memory, and
/// most processes are never asked for it.
pub fn docs_router() -> Router {
    // The online validator badge would call out to the internet from the page: off.
    let config = SwaggerConfig::new([DOCUMENT_PATH]).validator_url("none");
    Router::new()
        .route(DOCUMENT_PATH, get(serve_document))
        .merge(SwaggerUi::new("/docs").config(config))
}

const DOCUMENT_PATH: &str = "/openapi.json";

async fn serve_document() -> Response {
    static JSON: OnceLock<Result<Bytes, String>> = OnceLock::new();
    let json = JSON.get_or_init(|| {
        serde_json::to_vec(&document())
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    });
    match json {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        Err(error) => ApiError::internal(error).into_response(),
    }
}
