// The console's only script: live views (server-sent events), confirmations, and nothing
// that a page needs to work: without it, every link and form still does its job.
"use strict";

(function () {
  function busy(element) {
    var active = document.activeElement;
    return active && element.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
  }

  function setStatus(element, text, ok) {
    var status = document.querySelector(".live-status");
    if (status) {
      status.textContent = text;
      status.className = "live-status " + (ok ? "live-on" : "live-off");
    }
    element.setAttribute("data-live-state", ok ? "on" : "off");
  }

  function refresh(element) {
    if (busy(element)) {
      element.setAttribute("data-live-pending", "1");
      return;
    }
    var part = element.getAttribute("data-live-part");
    var url = part || window.location.href;
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.redirected || response.status === 401) {
          window.location.reload(); // the session ended: the login form
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null || html === undefined) {
          return;
        }
        if (part) {
          element.innerHTML = html;
        } else {
          var found = new DOMParser().parseFromString(html, "text/html").getElementById(element.id);
          if (found) {
            element.innerHTML = found.innerHTML;
          }
        }
        element.setAttribute("data-refreshed", String(Date.now()));
        setStatus(element, "● live", true);
      })
      .catch(function () {
        setStatus(element, "○ offline", false);
      });
  }

  function watch(element) {
    if (!window.EventSource) {
      return;
    }
    var source = new EventSource(element.getAttribute("data-live-source"));
    source.addEventListener("open", function () {
      setStatus(element, "● live", true);
    });
    source.addEventListener("changed", function () {
      refresh(element);
    });
    source.addEventListener("unavailable", function () {
      setStatus(element, "○ database unavailable", false);
    });
    source.addEventListener("error", function () {
      setStatus(element, "○ reconnecting", false);
    });
    element.addEventListener("focusout", function () {
      if (element.getAttribute("data-live-pending")) {
        element.removeAttribute("data-live-pending");
        window.setTimeout(function () {
          refresh(element);
        }, 0);
      }
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  document.addEventListener("change", function (event) {
    // "any" and a list of states exclude each other.
    var box = event.target;
    if (box.name !== "state" || !box.checked) {
      return;
    }
    var boxes = document.querySelectorAll('input[name="state"]');
    for (var i = 0; i < boxes.length; i++) {
      if ((box.value === "any") !== (boxes[i].value === "any")) {
        boxes[i].checked = false;
      }
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelectorAll("[data-live-source]");
    for (var i = 0; i < live.length; i++) {
      watch(live[i]);
    }
  });
})();
