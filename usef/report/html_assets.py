"""The inline style sheet, sorting script and layout widths of the listening report page
(:mod:`usef.report.html`): the page loads nothing from the network."""

from __future__ import annotations

__all__ = ["CLIP_MIN_EM", "CSS", "ID_EM", "INDEX_EM", "JS", "NUMBER_EM", "SORT_HINT"]

# Layout: the items table has a fixed layout over the full page width, numeric columns
# of fixed width and the audio columns sharing the rest, so two systems fit a 1280 px
# window with players and thumbnails shrunk to their column. With more systems the
# table's min-width (set per page) keeps the players usable and the table scrolls inside
# its own box (both ways, so the sticky header still works), never the page.
# Model names stay on one line, cut with an ellipsis; the full name is the title.
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1em 1.5em;color:#222}
h1{font-size:1.4em}table{border-collapse:collapse}
th,td{border:1px solid #ccc;padding:4px 6px;vertical-align:top}
th{background:#f2f2f2;position:sticky;top:0;z-index:1}
th[data-type]{cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.nw{white-space:nowrap}.name{display:block;max-width:100%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
#summary .name{max-width:22em}#summary td.dir{overflow-wrap:anywhere;font-size:.9em}
.scroll{overflow:auto;max-height:calc(100vh - 2em);max-width:100%}
#items{table-layout:fixed;width:100%}
#items td,#items th{overflow:hidden}
#items td.id{overflow-wrap:anywhere;font-size:.85em}
td.clip img{display:block;width:100%;max-width:200px;height:auto;background:#000}
td.clip audio{display:block;width:100%;max-width:200px;height:32px}
.note{background:#fff7d6;border:1px solid #e6d48a;padding:6px 10px;margin:8px 0}
.err{color:#b00020}.badge{background:#b00020;color:#fff;border-radius:3px;padding:0 3px;font-size:.8em}
td.clip.err{overflow-wrap:anywhere}td.num .badge{display:table;margin:2px 0 0 auto}
.muted{color:#777}
"""
# column widths of the items table (em); audio columns take what is left, at least CLIP_MIN_EM
INDEX_EM, ID_EM, NUMBER_EM, CLIP_MIN_EM = 2.5, 8.0, 6.0, 10.0

SORT_HINT = ('<p class="muted">Click a metric header to sort; click again to reverse. '
         "Spectrograms: log magnitude, 80 dB range, each scaled to its own peak.</p>")

# Sort rows by a header's column: numbers numerically, text by localeCompare,
# missing values last in both directions; a second click reverses the order.
JS = """
(function(){
var table=document.getElementById("items"),body=table.tBodies[0],heads=table.tHead.rows[0].cells;
function key(row,col,num){var v=row.cells[col].getAttribute("data-v");
 if(v===null){v=row.cells[col].textContent;}
 if(!num){return v;} if(v===""){return null;} var x=parseFloat(v); return isNaN(x)?null:x;}
function sortBy(th,col){
 var num=th.getAttribute("data-type")==="num",asc=th.getAttribute("aria-sort")!=="ascending";
 for(var i=0;i<heads.length;i++){if(heads[i].hasAttribute("data-type")){heads[i].setAttribute("aria-sort","none");}}
 th.setAttribute("aria-sort",asc?"ascending":"descending");
 var rows=Array.prototype.slice.call(body.rows);
 rows.sort(function(a,b){var x=key(a,col,num),y=key(b,col,num);
  if(x===null||y===null){return x===null?(y===null?0:1):-1;}
  var c=num?x-y:x.localeCompare(y);return asc?c:-c;});
 rows.forEach(function(r){body.appendChild(r);});}
Array.prototype.forEach.call(heads,function(th,col){
 if(!th.hasAttribute("data-type")){return;}
 th.addEventListener("click",function(){sortBy(th,col);});
 th.addEventListener("keydown",function(e){if(e.key==="Enter"||e.key===" "){e.preventDefault();sortBy(th,col);}});
});
})();
"""
