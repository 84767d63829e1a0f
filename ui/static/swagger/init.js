// Swagger UI (swagger-ui-dist, committed as is) on lbd's OpenAPI
// document. The document and "Try it out" requests carry the token the
// console's login keeps in sessionStorage, as the Authorization header.
"use strict";
(async function () {
  const token = sessionStorage.getItem("lbd-token") || "";
  const note = document.getElementById("lbd-note");
  if (!token) {
    note.textContent = "Log in to the console first (the API wants its token).";
    return;
  }
  const auth = "Bearer " + token;
  const resp = await fetch("/api/v1/openapi.json", { headers: { Authorization: auth } });
  if (!resp.ok) {
    note.textContent = "The daemon refused the document (" + resp.status + "): log in to the console again.";
    return;
  }
  const spec = await resp.json();
  window.SwaggerUIBundle({
    spec,
    dom_id: "#swagger",
    deepLinking: false,
    validatorUrl: null,
    requestInterceptor: (req) => {
      req.headers.Authorization = auth;
      return req;
    },
  });
})();
