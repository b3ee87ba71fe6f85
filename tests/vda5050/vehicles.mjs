#!/usr/bin/env node
// Virtual VDA 5050 vehicles for autocell's tests: vehicles not written here.
//
// Each serial number becomes one vda-5050-lib `AgvController` driving the
// library's own `VirtualAgvAdapter`, with its own MQTT connection (and so its
// own last will) to the broker given by --broker.  The library speaks VDA 5050
// 2.0.0 (`version: "2.0.0"`, topics `{interfaceName}/v2/{manufacturer}/{serial}/{topic}`).
// All the order, action and state logic is the library's; this file only adds
// what a test needs around it and what a real vehicle does that the library
// leaves to its integrator (see tests/vda5050/CONTRACT.md for the whole contract):
//
//   - a schema-valid factsheet listing the adapter's own actions, published
//     (retained) at start and on the `factsheetRequest` instant action (the
//     adapter itself only sets an empty one, which would fail the schema);
//   - instantActions with the list under `actions`, as VDA 5050 2.0 names it
//     (the library reads only `instantActions`, the 1.1 name);
//   - on every reconnect to the broker (a broker restart loses retained
//     messages) connection ONLINE and the factsheet are published again; the
//     library re-publishes only the state;
//   - --pose-file: the pose each vehicle last reported, so that one killed and
//     started again is where it was (the library starts from a fixed pose);
//   - fault switches: --fatal-after-orders (a FATAL error entry and a halted
//     vehicle after accepting its N-th order, cleared by SIGUSR1) and
//     --invalid-state (state messages that fail the schema).
//
// SIGTERM or SIGINT stops every vehicle cleanly: connection OFFLINE (retained),
// then an MQTT DISCONNECT, so the broker discards the last will.  SIGKILL leaves
// the broker to publish each vehicle's last will, connection CONNECTIONBROKEN.
// --ready-file is written (atomically, once) when every vehicle is connected,
// subscribed to its order and instantActions topics, and has published its
// first state and its factsheet.

import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import lib from "vda-5050-lib";

const { AgvController, VirtualAgvAdapter, Topic, ConnectionState, ErrorLevel } = lib;

const VDA_VERSION = "2.0.0";

const USAGE = `usage: node vehicles.mjs --broker mqtt://127.0.0.1:PORT --serials agv1,agv2 [options]
  --broker URL             mqtt://HOST:PORT or mqtts://HOST:PORT (required)
  --ca FILE                CA certificate (PEM) the broker's TLS certificate must chain to
  --username U, --password P   broker credentials (optional)
  --interface-name NAME    first topic level (default uagv)
  --manufacturer NAME      (default autocell)
  --serials S1,S2,...      one virtual vehicle per serial number (required)
  --map-id MAP | S=MAP     map id the vehicles report (default local); repeatable, S=MAP for one vehicle
  --start S=X,Y,THETA[,NODE]  initial pose in metres/radians and last node id (default 0,0,0 and "")
  --speed FACTOR           time lapse: motion and actions run FACTOR times faster (default 1)
  --vehicle-speed M_S      nominal driving speed in m/s before the time lapse (default 2)
  --tick-rate HZ           simulation ticks per second (default 5 x FACTOR, between 5 and 50)
  --state-interval-s S     longest wall time between two state messages (default 30)
  --fatal-after-orders N | S=N   report a FATAL error and halt after accepting the N-th order
                           (SIGUSR1 clears it and resumes)
  --invalid-state[=S1,S2]  publish state messages that fail the schema (all vehicles, or those named)
  --pose-file FILE         keep each vehicle's last reported pose here; a restart starts from it
                           (instead of --start), as a real vehicle still knows where it stands
  --ready-file FILE        written atomically once all vehicles are ready: {"pid":..., "serials":[...]}`;

function fail(message) {
    process.stderr.write(`vehicles.mjs: ${message}\n${USAGE}\n`);
    process.exit(2);
}

function parseArgs(argv) {
    const opts = {
        broker: undefined, ca: undefined, username: undefined, password: undefined,
        interfaceName: "uagv", manufacturer: "autocell", serials: [],
        mapId: "local", mapIds: new Map(), starts: new Map(), speed: 1, vehicleSpeed: 2,
        tickRate: undefined, stateIntervalS: 30, fatalAfter: undefined, fatalAfterBySerial: new Map(),
        invalidState: undefined, readyFile: undefined, poseFile: undefined,
    };
    const valued = new Set(["--broker", "--ca", "--username", "--password", "--interface-name",
        "--manufacturer", "--serials", "--map-id", "--start", "--speed", "--vehicle-speed",
        "--tick-rate", "--state-interval-s", "--fatal-after-orders", "--ready-file", "--pose-file"]);
    const perSerial = (value) => {
        const eq = value.indexOf("=");
        return eq < 0 ? [undefined, value] : [value.slice(0, eq), value.slice(eq + 1)];
    };
    const positive = (flag, value) => {
        const n = Number(value);
        if (!Number.isFinite(n) || n <= 0) fail(`${flag} needs a positive number, got ${JSON.stringify(value)}`);
        return n;
    };
    for (let i = 0; i < argv.length; i++) {
        let flag = argv[i];
        let value;
        if (flag === "--help" || flag === "-h") {
            process.stdout.write(USAGE + "\n");
            process.exit(0);
        }
        if (flag.startsWith("--invalid-state")) {
            opts.invalidState = flag === "--invalid-state" ? "all"
                : flag.startsWith("--invalid-state=") ? flag.slice(16).split(",").filter(Boolean)
                    : fail(`unknown flag ${flag}`);
            continue;
        }
        const eq = flag.indexOf("=");
        if (flag.startsWith("--") && eq > 0 && valued.has(flag.slice(0, eq))) {
            value = flag.slice(eq + 1);
            flag = flag.slice(0, eq);
        } else if (valued.has(flag)) {
            if (i + 1 >= argv.length) fail(`${flag} needs a value`);
            value = argv[++i];
        } else {
            fail(`unknown flag ${flag}`);
        }
        switch (flag) {
            case "--broker": opts.broker = value; break;
            case "--ca": opts.ca = value; break;
            case "--username": opts.username = value; break;
            case "--password": opts.password = value; break;
            case "--interface-name": opts.interfaceName = value; break;
            case "--manufacturer": opts.manufacturer = value; break;
            case "--serials": opts.serials = value.split(",").filter(Boolean); break;
            case "--map-id": {
                const [serial, map] = perSerial(value);
                if (serial === undefined) opts.mapId = map; else opts.mapIds.set(serial, map);
                break;
            }
            case "--start": {
                const [serial, pose] = perSerial(value);
                if (serial === undefined) fail(`--start needs SERIAL=X,Y,THETA[,NODE], got ${value}`);
                const [x, y, theta, node] = pose.split(",");
                const nums = [x, y, theta].map(Number);
                if (nums.some(n => !Number.isFinite(n))) fail(`--start ${value}: x, y and theta must be numbers`);
                opts.starts.set(serial, { x: nums[0], y: nums[1], theta: nums[2], lastNodeId: node ?? "" });
                break;
            }
            case "--speed": opts.speed = positive(flag, value); break;
            case "--vehicle-speed": opts.vehicleSpeed = positive(flag, value); break;
            case "--tick-rate": opts.tickRate = positive(flag, value); break;
            case "--state-interval-s": opts.stateIntervalS = positive(flag, value); break;
            case "--fatal-after-orders": {
                const [serial, n] = perSerial(value);
                const count = positive(flag, n);
                if (serial === undefined) opts.fatalAfter = count; else opts.fatalAfterBySerial.set(serial, count);
                break;
            }
            case "--ready-file": opts.readyFile = value; break;
            case "--pose-file": opts.poseFile = value; break;
        }
    }
    if (!opts.broker) fail("--broker is required");
    if (!/^mqtts?:\/\//.test(opts.broker)) fail(`--broker must be mqtt:// or mqtts://, got ${opts.broker}`);
    if (opts.serials.length === 0) fail("--serials is required");
    for (const serial of [...opts.starts.keys(), ...opts.mapIds.keys(), ...opts.fatalAfterBySerial.keys(),
        ...(Array.isArray(opts.invalidState) ? opts.invalidState : [])]) {
        if (!opts.serials.includes(serial)) fail(`${serial} is not among --serials ${opts.serials.join(",")}`);
    }
    return opts;
}

// The controller handles these instant actions itself; the adapter adds its own list.
const CONTROLLER_ACTIONS = [
    { actionType: "cancelOrder", actionScopes: ["INSTANT"] },
    { actionType: "stateRequest", actionScopes: ["INSTANT"] },
    { actionType: "factsheetRequest", actionScopes: ["INSTANT"] },
];

// What the adapter's action definitions check their parameters against, for the
// factsheet (the definitions hold only predicate functions).
const PARAMETER_TYPES = {
    duration: ["NUMBER", true, "seconds in RUNNING (default 5; pick/drop add 1 s INITIALIZING)"],
    stationType: ["STRING", false, "must start with \"floor\""],
    loadType: ["STRING", false, "must be \"EPAL\""],
    x: ["NUMBER", false], y: ["NUMBER", false], theta: ["NUMBER", false],
    mapId: ["STRING", false], lastNodeId: ["STRING", false], lastNodeSequenceId: ["INTEGER", true],
    orders: ["ARRAY", false],
};

function factsheetFor(adapter, opts) {
    const scopes = s => (Array.isArray(s) ? s : [s]).map(x => x.toUpperCase());
    const agvActions = adapter.actionDefinitions.map(def => {
        const action = { actionType: def.actionType, actionScopes: scopes(def.actionScopes) };
        const keys = Object.keys(def.actionParameterConstraints ?? {});
        if (keys.length > 0) {
            action.actionParameters = keys.map(key => {
                const [valueDataType, isOptional, description] = PARAMETER_TYPES[key] ?? ["STRING", true];
                return { key, valueDataType, isOptional, ...(description ? { description } : {}) };
            });
        }
        return action;
    });
    return {
        typeSpecification: {
            seriesName: "vda-5050-lib VirtualAgvAdapter",
            seriesDescription: `virtual vehicle, time lapse ${opts.speed}x`,
            agvKinematic: "OMNI", agvClass: "CARRIER", maxLoadMass: 20,
            localizationTypes: ["NATURAL"], navigationTypes: ["AUTONOMOUS"],
        },
        physicalParameters: {
            speedMin: 0, speedMax: opts.vehicleSpeed, accelerationMax: 1000, decelerationMax: 1000,
            heightMin: 0.5, heightMax: 0.5, width: 1, length: 1,
        },
        protocolLimits: {
            maxStringLens: {}, maxArrayLens: {},
            timing: { minOrderInterval: 0, minStateInterval: 0, defaultStateInterval: 30 },
        },
        protocolFeatures: {
            optionalParameters: [{ parameter: "order.nodes.nodePosition", support: "REQUIRED",
                description: "every node but the first needs a position on the vehicle's map" }],
            agvActions: [...CONTROLLER_ACTIONS, ...agvActions],
        },
        agvGeometry: {},
        loadSpecification: { loadPositions: ["default"], loadSets: [{ setName: "EPAL", loadType: "EPAL" }] },
    };
}

class TestVehicle extends AgvController {
    constructor(agvId, clientOptions, controllerOptions, adapterOptions, faults, opts) {
        super(agvId, clientOptions, controllerOptions, adapterOptions);
        this.faults = faults;
        this.opts = opts;
        this.ordersAccepted = 0;
        this.lastAcceptedOrderId = undefined;
        this.fatalError = undefined;
        this.wasOnline = false;
        this.factsheet = factsheetFor(this._agvAdapter, opts);
        this.ready = new Promise(resolve => { this.markReady = resolve; });
    }

    log(message) {
        process.stdout.write(`${this.agvId.serialNumber} ${message}\n`);
    }

    publish(topic, object, options) {
        if (!this._isStarted) {
            // Stopping: the library marks itself stopped before it disconnects, and a
            // message arriving in between would make it publish and throw.
            return Promise.resolve(undefined);
        }
        if ((topic === Topic.State || topic === Topic.Visualization) && object.agvPosition) {
            this.poses?.remember(this.agvId.serialNumber, object.agvPosition,
                topic === Topic.State ? object.lastNodeId : undefined);
        }
        if (topic === Topic.State && this.faults.invalidState) {
            // Two schema violations: the required `driving` is missing and the
            // charge is a string.  Everything else is the library's own state.
            const { driving: _, ...rest } = object;
            object = { ...rest, batteryState: { ...object.batteryState, batteryCharge: "high" } };
        }
        return super.publish(topic, object, options);
    }

    async _subscribeOnStarted() {
        await super._subscribeOnStarted();
        // The adapter's attach() set an empty factsheet; replace it before publishing.
        this.updateFactsheet(this.factsheet);
        await this.publish(Topic.Factsheet, this.factsheet, { retainMessage: true });
        this.markReady();
    }

    _emitConnectionStateChange(state) {
        const reconnected = state === "online" && this._connectionState !== "online" && this.wasOnline;
        if (state === "online") this.wasOnline = true;
        if (reconnected) {
            // The library publishes ONLINE only once, at start; a restarted broker
            // has lost the retained ONLINE and factsheet, so say them again first.
            this.log("reconnected");
            this.publish(Topic.Connection, { connectionState: ConnectionState.Online }, { retainMessage: true })
                .then(() => this.publish(Topic.Factsheet, this.factsheet, { retainMessage: true }))
                .catch(err => this.log(`republish failed: ${err.message}`));
        } else if (state === "offline" && this._connectionState === "online") {
            this.log("lost broker");
        }
        super._emitConnectionStateChange(state);
    }

    _processInstantActions(message) {
        // VDA 5050 2.0 names the list `actions`; vda-5050-lib 1.4.0 reads and
        // validates `instantActions` (the 1.1 name) for 2.0 too.  Take the
        // standard name, so master control sends what the 2.0 schema requires.
        if (message && Array.isArray(message.actions) && message.instantActions === undefined) {
            const { actions, ...rest } = message;
            message = { ...rest, instantActions: actions };
        }
        return super._processInstantActions(message);
    }

    _acceptOrder(order, mode) {
        super._acceptOrder(order, mode);
        if (order.orderId === this.lastAcceptedOrderId) {
            return; // an update of the order already counted
        }
        this.lastAcceptedOrderId = order.orderId;
        this.ordersAccepted += 1;
        this.log(`order accepted ${order.orderId} (${this.ordersAccepted})`);
        if (this.faults.fatalAfter !== undefined && this.ordersAccepted === this.faults.fatalAfter) {
            this.injectFatal(order);
        }
    }

    injectFatal(order) {
        this.fatalError = {
            errorType: "vehicleFault",
            errorLevel: ErrorLevel.Fatal,
            errorDescription: `test fault: FATAL after accepting order ${this.ordersAccepted} (--fatal-after-orders)`,
            errorReferences: [{ referenceKey: "orderId", referenceValue: order.orderId }],
        };
        // Halt as a faulted vehicle would: the adapter's pause stops driving and
        // freezes the running actions.  The order stays active.
        const paused = this._agvAdapter._startPause({});
        if (paused) this.updatePartialState(paused);
        this.updateErrors(this.fatalError, "add", true);
        this.log(`FATAL ${order.orderId}`);
    }

    clearFatal() {
        if (!this.fatalError) return;
        const unpaused = this._agvAdapter._stopPause({});
        if (unpaused) this.updatePartialState(unpaused);
        this.updateErrors(this.fatalError, "remove", true);
        this.fatalError = undefined;
        this.log("FATAL cleared");
    }
}

function writeAtomically(file, object) {
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(object) + "\n");
    renameSync(tmp, file);
}

// The pose each vehicle last reported (state or visualization), per serial, so that a
// vehicle killed and started again comes back where master control last saw it.
class PoseFile {
    constructor(file) {
        this.file = file;
        this.poses = existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : {};
    }

    startOf(serial) {
        const p = this.poses[serial];
        return p && { x: p.x, y: p.y, theta: p.theta, mapId: p.mapId, lastNodeId: p.lastNodeId ?? "" };
    }

    remember(serial, { x, y, theta, mapId }, lastNodeId) {
        const before = this.poses[serial] ?? {};
        const now = { x, y, theta, mapId, lastNodeId: lastNodeId ?? before.lastNodeId ?? "" };
        if (JSON.stringify(now) === JSON.stringify(before)) return;
        this.poses[serial] = now;
        writeAtomically(this.file, this.poses);
    }
}

async function main() {
    const opts = parseArgs(process.argv.slice(2));
    const transport = { brokerUrl: opts.broker, username: opts.username, password: opts.password };
    if (opts.ca) transport.tlsOptions = { ca: readFileSync(opts.ca) };
    const tickRate = opts.tickRate ?? Math.min(50, Math.max(5, 5 * opts.speed));
    const poses = opts.poseFile ? new PoseFile(opts.poseFile) : undefined;
    const vehicles = opts.serials.map(serial => {
        const invalidState = opts.invalidState === "all" ||
            (Array.isArray(opts.invalidState) && opts.invalidState.includes(serial));
        const faults = { invalidState, fatalAfter: opts.fatalAfterBySerial.get(serial) ?? opts.fatalAfter };
        const start = poses?.startOf(serial) ?? {
            mapId: opts.mapIds.get(serial) ?? opts.mapId,
            ...(opts.starts.get(serial) ?? { x: 0, y: 0, theta: 0, lastNodeId: "" }),
        };
        const clientOptions = {
            interfaceName: opts.interfaceName, vdaVersion: VDA_VERSION, transport,
            // The library checks what it sends against its schemas; a vehicle told
            // to send invalid state must be let through.
            topicObjectValidation: { outbound: !invalidState },
        };
        const adapterOptions = {
            initialPosition: start,
            vehicleSpeed: opts.vehicleSpeed, timeLapse: opts.speed, tickRate,
        };
        const vehicle = new TestVehicle({ manufacturer: opts.manufacturer, serialNumber: serial }, clientOptions,
            { agvAdapterType: VirtualAgvAdapter, publishStateInterval: opts.stateIntervalS * 1000 },
            adapterOptions, faults, opts);
        vehicle.poses = poses;
        return vehicle;
    });

    let stopping = false;
    const stop = async (signal) => {
        if (stopping) return;
        stopping = true;
        process.stdout.write(`stopping on ${signal}\n`);
        await Promise.allSettled(vehicles.map(v => v.stop()));
        process.exit(0);
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
    process.on("SIGUSR1", () => vehicles.forEach(v => v.clearFatal()));

    // mqtt.js retries a refused or unreachable broker forever; the library's
    // start() fails only on the first connection error (e.g. bad credentials).
    try {
        await Promise.all(vehicles.map(v => v.start()));
    } catch (err) {
        process.stderr.write(`vehicles.mjs: cannot connect to ${opts.broker}: ${err.message}\n`);
        process.exit(1);
    }
    await Promise.all(vehicles.map(v => v.ready));
    for (const v of vehicles) v.log(`online at ${JSON.stringify(v.currentState.agvPosition)}`);
    if (opts.readyFile) {
        writeAtomically(opts.readyFile, { pid: process.pid, serials: opts.serials, vdaVersion: VDA_VERSION });
    }
}

main().catch(err => {
    process.stderr.write(`vehicles.mjs: ${err.stack ?? err}\n`);
    process.exit(1);
});
