// The console page: noVNC's RFB client on the WebSocket path the page was given (same
// origin: baadal serve relays it to websockify), with the VNC password from the page.
import RFB from "./novnc/core/rfb.js";

const ticketElement = document.getElementById("console-ticket");
const ticket = JSON.parse(ticketElement.textContent);
ticketElement.remove(); // the password stays in this script only

const status = document.getElementById("console-status");
function show(state, text) {
    status.dataset.state = state;
    status.textContent = text;
}

const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
const url = `${scheme}//${window.location.host}${ticket.path}`;
const rfb = new RFB(document.getElementById("console-screen"), url, {
    credentials: { password: ticket.password },
});
rfb.scaleViewport = true;
rfb.focusOnClick = true;
rfb.addEventListener("connect", () => {
    show("connected", "Connected.");
    rfb.focus();
});
rfb.addEventListener("disconnect", (event) => {
    if (event.detail.clean) {
        show("disconnected", "Disconnected.");
    } else {
        show("refused", "The console could not be opened (a used or expired link?): open it again from the VM's page.");
    }
});
rfb.addEventListener("securityfailure", () => show("refused", "The console refused its password."));
