/*
 * appleid.auth.js, as served by appleconnect's emulator of Apple's side (not Apple's script).
 *
 * Implements the documented surface of Sign in with Apple JS
 * (docs/apple-protocol.md#buttons-and-js):
 * AppleID.auth.init(ClientConfigI), AppleID.auth.signIn([ClientConfigI]) (redirect, or a popup
 * that resolves a Promise), the appleid-signin-* meta tags, <div id="appleid-signin" data-...>
 * buttons, and the AppleIDSignInOnSuccess / AppleIDSignInOnFailure events on document.
 */
(function () {
  "use strict";
  if (window.AppleID && window.AppleID.auth) { return; }
  var script = document.currentScript;
  var src = new URL(script ? script.src : "/appleauth/static/jsapi/appleid/1/en_US/appleid.auth.js", document.baseURI);
  var base = src.origin + src.pathname.replace(/\/appleauth\/static\/jsapi\/.*$/, "");
  var localeMatch = src.pathname.match(/\/appleid\/1\/([A-Za-z_]+)\/appleid\.auth\.js$/);
  var locale = localeMatch ? localeMatch[1] : "en_US";
  var LABELS = { "sign-in": "Sign in with Apple", "continue": "Continue with Apple", "sign-up": "Sign up with Apple" };
  var config = null;

  function meta(name) {
    var tag = document.querySelector('meta[name="' + name + '"]');
    return tag ? tag.getAttribute("content") : undefined;
  }

  function fromMeta() {
    var found = {
      clientId: meta("appleid-signin-client-id"),
      scope: meta("appleid-signin-scope"),
      redirectURI: meta("appleid-signin-redirect-uri"),
      state: meta("appleid-signin-state"),
      nonce: meta("appleid-signin-nonce")
    };
    var popup = meta("appleid-signin-use-popup");
    if (popup !== undefined) { found.usePopup = popup === "true"; }
    return found;
  }

  function merge() {
    var out = {};
    for (var i = 0; i < arguments.length; i++) {
      var part = arguments[i] || {};
      for (var key in part) {
        if (Object.prototype.hasOwnProperty.call(part, key) && part[key] !== undefined) { out[key] = part[key]; }
      }
    }
    return out;
  }

  function check(cfg) {
    if (!cfg.clientId) { throw new Error('The "clientId" should be set (AppleID.auth.init or appleid-signin-client-id).'); }
    if (!cfg.redirectURI) { throw new Error('The "redirectURI" should be set (AppleID.auth.init or appleid-signin-redirect-uri).'); }
  }

  function authorizeQuery(cfg, extra) {
    var query = new URLSearchParams();
    query.set("client_id", cfg.clientId);
    query.set("redirect_uri", cfg.redirectURI);
    query.set("response_type", "code id_token");
    if (cfg.scope) { query.set("scope", cfg.scope); }
    if (cfg.state) { query.set("state", cfg.state); }
    if (cfg.nonce) { query.set("nonce", cfg.nonce); }
    for (var key in extra) { query.set(key, extra[key]); }
    return query.toString();
  }

  function fire(name, detail) {
    document.dispatchEvent(new CustomEvent(name, { detail: detail }));
  }

  var current = null; // the popup flow in progress

  function finish(flow, ok, value) {
    if (current !== flow) { return; }
    current = null;
    clearInterval(flow.watcher);
    window.removeEventListener("message", flow.listener);
    if (ok) {
      fire("AppleIDSignInOnSuccess", value);
      flow.resolve(value);
    } else {
      fire("AppleIDSignInOnFailure", value);
      flow.reject(value);
    }
  }

  function popupSignIn(cfg) {
    if (current) { finish(current, false, { error: "user_trigger_new_signin_flow" }); }
    var frameId = (window.crypto && crypto.randomUUID) ? crypto.randomUUID() : String(Date.now()) + "-" + Math.random().toString(16).slice(2);
    // Like Apple's script: /auth/authorize in a popup with response_mode=web_message; the page
    // posts the result to this window, at the origin of the registered redirect URI only.
    var url = base + "/auth/authorize?" + authorizeQuery(cfg, { response_mode: "web_message", frame_id: frameId });
    return new Promise(function (resolve, reject) {
      var flow = { resolve: resolve, reject: reject, watcher: null, listener: null };
      current = flow;
      var win = window.open(url, "AppleAuthentication", "popup,width=560,height=720");
      if (!win) { finish(flow, false, { error: "popup_blocked_by_browser" }); return; }
      flow.listener = function (event) {
        if (event.origin !== src.origin || event.source !== win) { return; }
        var message = event.data;
        if (!message || message.type !== "appleid_signin_response" || message.frame_id !== frameId) { return; }
        var data = message.data || {};
        if (data.error) { finish(flow, false, { error: data.error }); } else { finish(flow, true, data); }
      };
      window.addEventListener("message", flow.listener);
      flow.watcher = setInterval(function () {
        if (!win.closed) { return; }
        clearInterval(flow.watcher);
        // The popup closes itself after posting; let its message arrive first.
        setTimeout(function () { finish(flow, false, { error: "popup_closed_by_user" }); }, 500);
      }, 400);
    });
  }

  function signIn(options) {
    var cfg = merge(fromMeta(), config, options);
    check(cfg);
    if (cfg.usePopup) { return popupSignIn(cfg); }
    window.location.assign(base + "/auth/authorize?" + authorizeQuery(cfg, { response_mode: "form_post" }));
    return new Promise(function () {});
  }

  function number(value, low, high, fallback) {
    var n = parseInt(value, 10);
    return isNaN(n) ? fallback : Math.min(high, Math.max(low, n));
  }

  function renderButton(el) {
    if (el.getAttribute("data-appleid-rendered")) { return; }
    el.setAttribute("data-appleid-rendered", "true");
    var d = el.dataset;
    var mode = d.mode === "left-align" || d.mode === "logo-only" ? d.mode : "center-align";
    var type = LABELS[d.type] ? d.type : (d.type === "sign in" ? "sign-in" : "sign-in");
    var box = el.getBoundingClientRect();
    var height = d.height && d.height !== "100%" ? number(d.height, 30, 64, 44) : number(box.height || 44, 30, 64, 44);
    var width = d.width && d.width !== "100%" ? number(d.width, 130, 375, 240) : number(box.width || 240, 130, 375, 240);
    var query = new URLSearchParams();
    var path = "/appleid/button";
    if (mode === "logo-only") {
      path += "/logo";
      width = height;
      query.set("size", String(height));
    } else {
      if (mode === "left-align") {
        path += "/left";
        if (d.logoSize) { query.set("logo-size", d.logoSize); }
        if (d.logoPosition) { query.set("logo-position", String(number(d.logoPosition, 0, Math.floor(width / 2), 0))); }
        if (d.labelPosition) { query.set("label-position", String(number(d.labelPosition, 0, Math.floor(width / 2), 0))); }
      }
      query.set("width", String(width));
      query.set("height", String(height));
      query.set("type", type);
      query.set("locale", locale);
    }
    query.set("color", d.color === "white" ? "white" : "black");
    query.set("border", d.border === "false" ? "false" : "true");
    query.set("border_radius", String(number(d.borderRadius, 0, 50, 15)));
    var button = document.createElement("div");
    button.setAttribute("role", "button");
    button.setAttribute("tabindex", "0");
    button.setAttribute("aria-label", LABELS[type]);
    button.style.cssText = "display:inline-block;cursor:pointer;line-height:0;border-radius:" + number(d.borderRadius, 0, 50, 15) + "px";
    var img = document.createElement("img");
    img.alt = "";
    img.width = width;
    img.height = height;
    img.src = base + path + "?" + query.toString();
    button.appendChild(img);
    function start() { signIn().catch(function () {}); }
    button.addEventListener("click", start);
    button.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); start(); }
    });
    el.appendChild(button);
  }

  function renderButtons() {
    var el = document.getElementById("appleid-signin");
    if (el) { renderButton(el); }
  }

  function init(options) {
    if (!options || typeof options !== "object") { throw new TypeError("AppleID.auth.init expects a ClientConfigI object."); }
    config = merge(fromMeta(), options);
    check(config);
    renderButtons();
  }

  window.AppleID = { auth: { init: init, signIn: signIn, renderButton: renderButtons } };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { if (meta("appleid-signin-client-id")) { renderButtons(); } });
  } else if (meta("appleid-signin-client-id")) {
    renderButtons();
  }
})();
