"""A Flask app to serve with the steps: `step05-wsgi hello_flask:app` from this directory."""
from flask import Flask, request

app = Flask(__name__)


@app.route("/")
def hello():
    return "Hello from Flask!\n"


@app.route("/greet/<name>")
def greet(name):
    return {"hello": name, "agent": request.headers.get("User-Agent", "")}


@app.route("/cpu")
def cpu():
    """A few milliseconds of pure-Python arithmetic, holding the GIL throughout."""
    return f"{sum(i * i for i in range(100_000))}\n"
