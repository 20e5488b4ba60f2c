/*
 * Apple Connect embed script: <script src="https://SERVICE/embed.js" async data-...></script>
 *
 * Renders the Sign in with Apple button where the script tag is (or in data-target) and starts
 * the sign-in: data-flow="redirect" navigates to the service, data-flow="popup" (default) opens
 * a popup whose result comes back by postMessage, only to origins the administrator allowed.
 * The result is dispatched as a CustomEvent "appleconnect:signin" (bubbling, detail = result)
 * on the button, and passed to window[data-callback] when that names a function.
 * No external resources; docs/embedding.md describes every attribute.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script) { return; }
  var service = new URL(script.src, document.baseURI);
  var base = service.origin;
  var d = script.dataset;
  var MODES = { "center-align": "/buttons/apple", "left-align": "/buttons/apple/left", "logo-only": "/buttons/apple/logo" };
  var LABELS = { "sign-in": "Sign in with Apple", "continue": "Continue with Apple", "sign-up": "Sign up with Apple" };
  var mode = MODES[d.mode] ? d.mode : "center-align";
  var type = LABELS[d.type] ? d.type : "sign-in";
  var flow = d.flow === "redirect" ? "redirect" : "popup";

  function num(value, fallback, low, high) {
    var n = parseInt(value, 10);
    if (isNaN(n)) { return fallback; }
    return Math.min(high, Math.max(low, n));
  }

  var query = new URLSearchParams();
  var width, height;
  if (mode === "logo-only") {
    width = height = num(d.size || d.height, 44, 30, 64);
    query.set("size", String(width));
  } else {
    width = num(d.width, 240, 130, 375);
    height = num(d.height, 44, 30, 64);
    query.set("width", String(width));
    query.set("height", String(height));
    query.set("type", type);
    if (d.locale) { query.set("locale", d.locale); }
  }
  query.set("color", d.color === "white" ? "white" : "black");
  query.set("border", d.border === "true" ? "true" : "false");
  query.set("border_radius", String(num(d.borderRadius, 15, 0, 50)));

  var label = d.label || LABELS[type];
  var button = document.createElement(flow === "redirect" ? "a" : "button");
  button.className = "appleconnect-button";
  button.setAttribute("aria-label", label);
  button.style.cssText = "display:inline-block;padding:0;margin:0;border:0;background:none;" +
    "cursor:pointer;line-height:0;border-radius:" + num(d.borderRadius, 15, 0, 50) + "px";
  var img = document.createElement("img");
  img.src = base + MODES[mode] + "?" + query.toString();
  img.width = width;
  img.height = height;
  img.alt = "";
  button.appendChild(img);

  function report(detail) {
    button.dispatchEvent(new CustomEvent("appleconnect:signin", { detail: detail, bubbles: true }));
    var callback = d.callback && window[d.callback];
    if (typeof callback === "function") { callback(detail); }
  }

  if (flow === "redirect") {
    var next = d.next && d.next.charAt(0) === "/" ? d.next : "/";
    button.href = base + "/auth/apple/start?next=" + encodeURIComponent(next);
  } else {
    button.type = "button";
    var popup = null;
    var watcher = null;
    var settled = true;
    function settle(detail) {
      if (settled) { return; }
      settled = true;
      clearInterval(watcher);
      report(detail);
    }
    window.addEventListener("message", function (event) {
      if (event.origin !== base || !popup || event.source !== popup) { return; }
      var data = event.data;
      if (!data || data.type !== "appleconnect:signin") { return; }
      settle(data);
    });
    button.addEventListener("click", function () {
      if (popup && !popup.closed) { popup.close(); }
      settle({ type: "appleconnect:signin", status: "error", error: "user_trigger_new_signin_flow" });
      var url = base + "/embed/popup?origin=" + encodeURIComponent(window.location.origin);
      popup = window.open(url, "appleconnect-signin", "popup,width=520,height=720");
      if (!popup) {
        report({ type: "appleconnect:signin", status: "error", error: "popup_blocked" });
        return;
      }
      settled = false;
      var opened = popup;
      watcher = setInterval(function () {
        if (!opened.closed) { return; }
        clearInterval(watcher);
        // The popup closes itself right after posting its message: give that message time to
        // arrive before concluding that the user closed the window.
        setTimeout(function () {
          if (popup === opened) {
            settle({ type: "appleconnect:signin", status: "error", error: "popup_closed_by_user" });
          }
        }, 500);
      }, 400);
    });
  }

  var target = d.target ? document.querySelector(d.target) : null;
  if (target) {
    target.appendChild(button);
  } else {
    script.parentNode.insertBefore(button, script.nextSibling);
  }
})();
