"use strict";
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child);
  return node;
}
function schemaText(schema) { return JSON.stringify(schema || {}, null, 2); }
function render(doc) {
  document.title = doc.info.title + " API";
  document.getElementById("title").textContent = doc.info.title;
  document.getElementById("subtitle").textContent = "version " + doc.info.version + " · OpenAPI " + doc.openapi;
  const groups = {};
  for (const [path, ops] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(ops)) {
      const tag = (op.tags || ["default"])[0];
      (groups[tag] = groups[tag] || []).push([method.toUpperCase(), path, op]);
    }
  }
  const main = document.getElementById("main");
  main.textContent = "";
  for (const [tag, ops] of Object.entries(groups)) {
    main.append(el("h2", {}, tag));
    for (const [method, path, op] of ops) {
      const body = el("div", {class: "body"});
      if (op.description) body.append(el("p", {}, op.description));
      if (op.parameters && op.parameters.length) {
        const table = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"),
          el("th", {}, "required"), el("th", {}, "schema")));
        for (const p of op.parameters) {
          table.append(el("tr", {}, el("td", {}, p.name), el("td", {}, p.in),
            el("td", {}, p.required ? "yes" : "no"), el("td", {}, el("code", {}, JSON.stringify(p.schema)))));
        }
        body.append(el("h4", {}, "Parameters"), table);
      }
      if (op.requestBody) {
        for (const [kind, media] of Object.entries(op.requestBody.content || {})) {
          body.append(el("h4", {}, "Request body (" + kind + ")"), el("pre", {}, schemaText(media.schema)));
        }
      }
      if (doc.security) {
        const needs = op.security || doc.security;
        const scopes = needs.flatMap(requirement => Object.values(requirement).flat());
        body.append(el("p", {}, !needs.length ? "No token needed." : "Needs a bearer token" +
          (scopes.length ? " with scope " + scopes.join(", ") : "") + "."));
      }
      body.append(el("h4", {}, "Responses"));
      for (const [status, resp] of Object.entries(op.responses || {})) {
        const content = resp.content || {};
        const kinds = Object.keys(content);
        body.append(el("p", {}, el("strong", {}, status), " " + (resp.description || "") +
          (kinds.length ? " (" + kinds.join(", ") + ")" : "")));
        if (status === "200") {
          for (const kind of kinds) {
            const schema = content[kind].schema;
            body.append(el("pre", {}, schemaText(schema)));
          }
        }
      }
      main.append(el("details", {}, el("summary", {},
        el("span", {class: "method " + method}, method), " ",
        el("span", {class: "path"}, path), op.summary ? " — " + op.summary : ""), body));
    }
  }
  if (doc.components && doc.components.schemas) {
    main.append(el("h2", {}, "Schemas"));
    for (const [name, schema] of Object.entries(doc.components.schemas)) {
      main.append(el("details", {}, el("summary", {}, name), el("div", {class: "body"},
        el("pre", {}, schemaText(schema)))));
    }
  }
}
fetch("openapi.json").then(r => r.json()).then(render).catch(err => {
  document.getElementById("main").textContent = "Could not load openapi.json: " + err;
});
