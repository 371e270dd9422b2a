//! `bazaar services`: what the tool assumes about each consuming service.

use serde_json::json;

use crate::context::{Context, redact};
use crate::output::{Table, json_line};
use crate::services::SERVICES;

pub fn run(context: &Context) {
    if context.json {
        let services: Vec<_> = SERVICES
            .iter()
            .map(|service| {
                json!({
                    "service": service.name,
                    "group": context.group_of(service.name),
                    "database": redact(&context.database_url(service.name, None)),
                    "consumes": service.consumes,
                    "projections": service.projections,
                })
            })
            .collect();
        json_line(&json!({ "services": services }));
        return;
    }
    let mut table = Table::new(["SERVICE", "GROUP", "DATABASE", "CONSUMES", "PROJECTIONS"]);
    for service in SERVICES.iter() {
        table.row(vec![
            service.name.to_owned(),
            context.group_of(service.name),
            redact(&context.database_url(service.name, None)),
            service.consumes.join(", "),
            service.projections.join(", "),
        ]);
    }
    table.print();
}
