//! The OpenAPI document's shared parts, declared once here by rule rather
//! than repeated in every handler: the problems most routes can answer
//! (malformed input, auth, deadlines, an unavailable store…), and each
//! route's security requirement. Handlers list only their own answers
//! (`200`, `201`, `304`, `404`, `409`, `412`).

use serde_json::json;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, Response, ResponseBuilder};

/// Routes anyone may call, even with auth on, as the document lists them.
const PUBLIC: &[&str] = &["/health"];

/// Routes that answer without the store.
const STORELESS: &[&str] = &["/metrics"];

/// Adds the bearer security scheme, and to every operation its security
/// requirement and the shared problems it can answer.
pub fn complete(api: &mut OpenApi) {
    let bearer = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(
            "An API key (`cairn_…`) or a JWT. Feeds also take it as `?access_token=`.",
        ))
        .build();
    api.components
        .get_or_insert_with(Default::default)
        .add_security_scheme("bearer", SecurityScheme::Http(bearer));
    for (path, item) in api.paths.paths.iter_mut() {
        let operations = [
            (&mut item.get, false),
            (&mut item.put, false),
            (&mut item.post, false),
            (&mut item.delete, false),
            (&mut item.head, true),
        ];
        for (operation, head) in operations {
            if let Some(operation) = operation {
                complete_operation(path, operation, head);
            }
        }
    }
}

/// An example of each parameter, by name: the same name means the same
/// thing on every route (`type` repeats, so its example is a list).
fn example_of(parameter: &str) -> Option<serde_json::Value> {
    let example = match parameter {
        "stream" | "after" => json!("account-123"),
        "category" => json!("account"),
        "prefix" => json!("account-"),
        "consumer" | "checkpoint" => json!("account-projector"),
        "id" | "message_id" => json!("0192b1a4-0000-7000-8000-000000000001"),
        "correlation_id" => json!("req-9"),
        "type" => json!(["Deposited"]),
        "position" => json!(0),
        "limit" => json!(100),
        "direction" => json!("backward"),
        "until_version" => json!(5),
        "as_of" => json!("2026-12-01T12:00:00Z"),
        "from_snapshot" => json!(true),
        "consumer_group_member" => json!(0),
        "consumer_group_size" => json!(2),
        _ => return None,
    };
    Some(example)
}

/// Gives each parameter without an example the one [`example_of`] names.
fn add_examples(operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        let has_example = serde_json::to_value(&*parameter)
            .is_ok_and(|p| p.get("example").is_some() || p["schema"].get("example").is_some());
        if let Some(example) = example_of(&parameter.name).filter(|_| !has_example) {
            *parameter = ParameterBuilder::from(parameter.clone())
                .example(Some(example))
                .build();
        }
    }
}

/// Documents `access_token` on the reads that also answer as feeds:
/// browsers' `EventSource` cannot send headers.
fn add_access_token(operation: &mut Operation) {
    let feeds = operation
        .responses
        .responses
        .get("200")
        .is_some_and(|answer| {
            matches!(answer, utoipa::openapi::RefOr::T(answer)
            if answer.content.contains_key("text/event-stream"))
        });
    if feeds {
        let access_token = ParameterBuilder::new()
            .name("access_token")
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some(
                "Feeds only (`Accept: text/event-stream`): the credential, for clients such as \
                 `EventSource` that cannot send `Authorization`. Proxies may log it: prefer the header.",
            ))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build();
        operation
            .parameters
            .get_or_insert_with(Vec::new)
            .push(access_token);
    }
}

/// One operation's security and shared problems (without a body for
/// `HEAD`, whose answers have none), and its parameters' examples.
fn complete_operation(path: &str, operation: &mut Operation, head: bool) {
    add_access_token(operation);
    add_examples(operation);
    let public = PUBLIC.contains(&path);
    let has_input = operation.request_body.is_some()
        || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let has_body = operation.request_body.is_some();
    let answers_json = operation
        .responses
        .responses
        .iter()
        .any(|(status, answer)| {
            status.starts_with('2')
                && matches!(answer, utoipa::openapi::RefOr::T(answer)
                if answer.content.contains_key("application/json"))
        });
    operation.security = Some(vec![if public {
        SecurityRequirement::default()
    } else {
        SecurityRequirement::new("bearer", [""; 0])
    }]);
    let shared: [(&str, bool, &str); 10] = [
        (
            "400",
            has_input,
            "Malformed input: a name, query parameter, header or body",
        ),
        (
            "401",
            !public,
            "No valid credential (`WWW-Authenticate: Bearer`)",
        ),
        (
            "403",
            !public,
            "The credential lacks the scope, or does not reach the stream",
        ),
        ("406", answers_json && !public, "`Accept` admits no JSON"),
        (
            "408",
            true,
            "The request was not received and answered within the request deadline",
        ),
        (
            "413",
            has_body,
            "The body or batch exceeds the configured limits",
        ),
        ("415", has_body, "The body is not JSON"),
        (
            "421",
            true,
            "Auth is off on a loopback listener, and `Host` is no loopback name",
        ),
        (
            "500",
            true,
            "A bug or corrupt data; the detail is in the server's log",
        ),
        (
            "503",
            !STORELESS.contains(&path),
            "The store is unavailable, or too many feeds are open: retry after `Retry-After`",
        ),
    ];
    let responses = &mut operation.responses.responses;
    for (status, applies, description) in shared {
        if applies && !responses.contains_key(status) {
            let answer = if head {
                ResponseBuilder::new().description(description).build()
            } else {
                problem(description)
            };
            responses.insert(status.to_owned(), answer.into());
        }
    }
}

/// A problem+json answer.
fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}
