//! The OpenAPI 3.1 document of every public endpoint (SPEC §4), merged from the gateway's and the
//! order service's routers, served at `/openapi.json` with a Swagger UI at `/docs` whose assets are
//! compiled into the binary, so the docs render with no internet access.

use axum::Router;
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

use crate::{gateway, order};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "forma",
        description = "Shopify orders in, print jobs out to the farm, parcels shipped, orders fulfilled.",
    ),
    tags(
        (name = "health", description = "Liveness, readiness, health and metrics"),
    ),
    components(schemas(crate::http::ErrorBody))
)]
struct ApiInfo;

/// The merged document, independent of the role (it is what `forma openapi` writes).
pub fn document() -> Document {
    let mut doc = ApiInfo::openapi();
    doc.info.version = crate::VERSION.to_owned();
    let (_, gateway) = gateway::api_routes().split_for_parts();
    let (_, order) = order::api_routes().split_for_parts();
    doc.merge(gateway);
    doc.merge(order);
    doc
}

/// The document as committed at `openapi/openapi.json`: pretty JSON with a trailing newline.
pub fn document_json() -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&document())? + "\n")
}

/// `GET /openapi.json` and the docs UI at `GET /docs`.
pub fn docs_router() -> Router {
    // The online validator badge would call out to the internet from the page: off.
    let config = SwaggerConfig::default().validator_url("none");
    SwaggerUi::new("/docs")
        .url("/openapi.json", document())
        .config(config)
        .into()
}
