// The API reference, rendered from /openapi.json with no third-party assets.
// Every value goes into the DOM through textContent, never innerHTML.
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function schemaText(schema) {
  return JSON.stringify(schema, null, 2);
}

async function main() {
  const root = document.getElementById("docs");
  let spec;
  try {
    spec = await (await fetch("/openapi.json")).json();
  } catch (err) {
    root.append(el("p", "Could not load /openapi.json: " + err));
    return;
  }
  root.append(el("p", `${spec.info.title} ${spec.info.version}: ${spec.info.description || ""}`));
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const sec = el("section", undefined, "panel");
      sec.append(el("h2", `${method.toUpperCase()} ${path}`));
      if (op.summary) sec.append(el("p", op.summary));
      if (op.description) sec.append(el("p", op.description));
      for (const p of op.parameters || []) {
        const s = p.schema || {};
        sec.append(el("p", `${p.in} parameter ${p.name}${p.required ? " (required)" : ""}: ` +
                               schemaText(s).replace(/\s+/g, " ")));
      }
      const body = op.requestBody && op.requestBody.content &&
                   op.requestBody.content["application/json"];
      if (body) {
        sec.append(el("h3", "JSON body"));
        sec.append(el("pre", schemaText(body.schema)));
      }
      const list = el("ul");
      for (const [code, r] of Object.entries(op.responses || {})) {
        const types = Object.keys(r.content || {}).join(", ");
        list.append(el("li", `${code}: ${r.description || ""}${types ? " (" + types + ")" : ""}`));
      }
      sec.append(el("h3", "Responses"));
      sec.append(list);
      root.append(sec);
    }
  }
}

main();
