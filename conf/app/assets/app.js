// The demo SPA's whole router: say which path this page was loaded for.
document.getElementById("route").textContent = "You asked for " + window.location.pathname;
