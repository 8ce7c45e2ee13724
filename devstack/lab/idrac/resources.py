"""Redfish documents served by a simulated iDRAC9, shaped after iDRAC9 firmware 5.x/6.x
(and checked key by key against the Dell samples that ship in the `sushy` package)."""

from __future__ import annotations

from typing import Any

from .bmc import BMC, MANAGER_ID, SYSTEM_ID, Job

R = "/redfish/v1"
MGR = f"{R}/Managers/{MANAGER_ID}"
SYS = f"{R}/Systems/{SYSTEM_ID}"
CHS = f"{R}/Chassis/{SYSTEM_ID}"
DELL_MGR = f"{R}/Dell/Managers/{MANAGER_ID}"


def ref(path: str) -> dict[str, str]:
    return {"@odata.id": path}


def collection(path: str, odata_type: str, name: str, members: list[str] | list[dict]) -> dict[str, Any]:
    docs = [m if isinstance(m, dict) else ref(m) for m in members]
    return {"@odata.context": f"{R}/$metadata#{odata_type}.{odata_type}", "@odata.id": path,
            "@odata.type": f"#{odata_type}.{odata_type}", "Description": name, "Name": name,
            "Members": docs, "Members@odata.count": len(docs)}


def service_root(bmc: BMC) -> dict[str, Any]:
    return {
        "@odata.context": f"{R}/$metadata#ServiceRoot.ServiceRoot", "@odata.id": R,
        "@odata.type": "#ServiceRoot.v1_6_0.ServiceRoot",
        "AccountService": ref(f"{MGR}/AccountService"), "Chassis": ref(f"{R}/Chassis"),
        "Description": "Root Service", "EventService": ref(f"{R}/EventService"),
        "Fabrics": ref(f"{R}/Fabrics"), "Id": "RootService", "JsonSchemas": ref(f"{R}/JsonSchemas"),
        "Links": {"Sessions": ref(f"{R}/SessionService/Sessions")},
        "Managers": ref(f"{R}/Managers"), "Name": "Root Service",
        "Oem": {"Dell": {"@odata.context": f"{R}/$metadata#DellServiceRoot.DellServiceRoot",
                         "@odata.type": "#DellServiceRoot.v1_0_0.DellServiceRoot", "IsBranded": 0,
                         "ManagerMACAddress": f"4c:d9:8f:00:{bmc.index // 256 % 256:02x}:{bmc.index % 256:02x}",
                         "ServiceTag": bmc.service_tag}},
        "Product": "Integrated Dell Remote Access Controller",
        "ProtocolFeaturesSupported": {"ExpandQuery": {"ExpandAll": True, "Levels": True, "Links": True,
                                                      "MaxLevels": 1, "NoLinks": True},
                                      "FilterQuery": True, "SelectQuery": True},
        "RedfishVersion": "1.11.0", "Registries": ref(f"{R}/Registries"),
        "SessionService": ref(f"{R}/SessionService"), "Systems": ref(f"{R}/Systems"),
        "Tasks": ref(f"{R}/TaskService"), "TaskService": ref(f"{R}/TaskService"),
        "UpdateService": ref(f"{R}/UpdateService"),
        "Vendor": "Dell", "UUID": f"4c4c4544-0000-1000-8000-{bmc.index:012d}",
    }


def session_service() -> dict[str, Any]:
    return {"@odata.id": f"{R}/SessionService", "@odata.type": "#SessionService.v1_1_8.SessionService",
            "Id": "SessionService", "Name": "Session Service", "Description": "Session Service",
            "ServiceEnabled": True, "SessionTimeout": 1800, "Sessions": ref(f"{R}/SessionService/Sessions"),
            "Status": {"Health": "OK", "State": "Enabled"}}


def session_doc(sid: str, user: str) -> dict[str, Any]:
    return {"@odata.id": f"{R}/SessionService/Sessions/{sid}", "@odata.type": "#Session.v1_3_0.Session",
            "Id": sid, "Name": "User Session", "Description": "User Session", "UserName": user,
            "Password": None}


def _components_status(bmc: BMC) -> dict[str, str]:
    return {"Health": "OK", "HealthRollup": "OK", "State": "Enabled"}


def system(bmc: BMC) -> dict[str, Any]:
    bios = next((c.version for c in bmc.components if c.device == "BIOS"), "")
    boot = dict(bmc.boot_override)
    boot.update({
        "BootOptions": ref(f"{SYS}/BootOptions"), "Certificates": ref(f"{SYS}/Boot/Certificates"),
        "BootOrder": ["Boot0001", "Boot0002"], "BootOrder@odata.count": 2,
        "UefiTargetBootSourceOverride": None,
        "BootSourceOverrideTarget@Redfish.AllowableValues": [
            "None", "Pxe", "Floppy", "Cd", "Hdd", "BiosSetup", "Utilities", "UefiTarget", "SDCard", "UefiHttp"],
    })
    return {
        "@odata.context": f"{R}/$metadata#ComputerSystem.ComputerSystem", "@odata.id": SYS,
        "@odata.type": "#ComputerSystem.v1_12_0.ComputerSystem",
        "Actions": {"#ComputerSystem.Reset": {
            "target": f"{SYS}/Actions/ComputerSystem.Reset",
            "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "ForceRestart", "GracefulRestart",
                                                  "GracefulShutdown", "PushPowerButton", "Nmi", "PowerCycle"]}},
        "AssetTag": "", "Bios": ref(f"{SYS}/Bios"), "BiosVersion": bios, "Boot": boot,
        "Description": "Computer System which represents a machine (physical or virtual) and the local "
                       "resources such as memory, cpu and other devices that can be accessed from that machine.",
        "EthernetInterfaces": ref(f"{SYS}/EthernetInterfaces"), "HostName": f"sim{bmc.index:04d}.lab",
        "HostWatchdogTimer": {"FunctionEnabled": False, "Status": {"State": "Disabled"}, "TimeoutAction": "None"},
        "HostingRoles": [], "HostingRoles@odata.count": 0, "Id": SYSTEM_ID, "IndicatorLED": "Off",
        "Links": {"Chassis": [ref(CHS)], "Chassis@odata.count": 1, "ManagedBy": [ref(MGR)],
                  "ManagedBy@odata.count": 1, "CooledBy": [], "CooledBy@odata.count": 0,
                  "PoweredBy": [], "PoweredBy@odata.count": 0},
        "Manufacturer": "Dell Inc.", "Memory": ref(f"{SYS}/Memory"),
        "MemorySummary": {"MemoryMirroring": "System", "Status": _components_status(bmc),
                          "TotalSystemMemoryGiB": 384},
        "Model": bmc.model, "Name": "System", "NetworkInterfaces": ref(f"{SYS}/NetworkInterfaces"),
        "Oem": {"Dell": {"@odata.type": "#DellOem.v1_3_0.DellOemResources", "DellSystem": {
            "@odata.id": f"{R}/Dell/Systems/{SYSTEM_ID}/DellSystem", "Id": SYSTEM_ID, "Name": "DellSystem",
            "SystemID": int(bmc.system_id, 16), "SystemGeneration": "14G Monolithic",
            "ChassisServiceTag": bmc.service_tag, "NodeID": bmc.service_tag,
            "BIOSReleaseDate": "01/01/2026", "LastSystemInventoryTime": "2026-01-01T00:00:00+00:00"}}},
        "PCIeDevices": [], "PCIeDevices@odata.count": 0, "PCIeFunctions": [], "PCIeFunctions@odata.count": 0,
        "PartNumber": "0X0XX0A00", "PowerState": "On" if bmc.power_state == "On" else (
            "Off" if bmc.power_state == "Off" else bmc.power_state),
        "ProcessorSummary": {"Count": 2, "LogicalProcessorCount": 48, "Model": "Intel(R) Xeon(R) Gold 6126",
                             "Status": _components_status(bmc)},
        "Processors": ref(f"{SYS}/Processors"), "SKU": bmc.service_tag,
        "SecureBoot": ref(f"{SYS}/SecureBoot"), "SerialNumber": f"CN7{bmc.index:09d}",
        "SimpleStorage": ref(f"{SYS}/SimpleStorage"),
        "Status": _components_status(bmc), "Storage": ref(f"{SYS}/Storage"), "SystemType": "Physical",
        "TrustedModules": [], "TrustedModules@odata.count": 0,
        "UUID": f"4c4c4544-0053-{bmc.index % 10000:04d}-8000-{bmc.index:012d}",
    }


def manager(bmc: BMC) -> dict[str, Any]:
    idrac = next((c.version for c in bmc.components if c.device == "iDRAC"), "")
    share = {
        "IgnoreCertificateWarning@Redfish.AllowableValues": ["Disabled", "Enabled"],
        "ProxySupport@Redfish.AllowableValues": ["Disabled", "EnabledProxyDefault", "Enabled"],
        "ProxyType@Redfish.AllowableValues": ["HTTP", "SOCKS4"],
        "ShareType@Redfish.AllowableValues": ["LOCAL", "NFS", "CIFS", "HTTP", "HTTPS"],
        "Target@Redfish.AllowableValues": ["ALL", "IDRAC", "BIOS", "NIC", "RAID"],
    }
    dell_links = {
        "DellAttributes": [ref(f"{MGR}/Attributes")], "DellAttributes@odata.count": 1,
        "DellJobService": ref(f"{DELL_MGR}/DellJobService"),
        "DellLCService": ref(f"{DELL_MGR}/DellLCService"),
        "DelliDRACCardService": ref(f"{DELL_MGR}/DelliDRACCardService"),
        "Jobs": ref(f"{MGR}/Jobs"),
    }
    return {
        "@odata.context": f"{R}/$metadata#Manager.Manager", "@odata.id": MGR,
        "@odata.type": "#Manager.v1_9_0.Manager",
        "Actions": {
            "#Manager.Reset": {"ResetType@Redfish.AllowableValues": ["GracefulRestart"],
                               "target": f"{MGR}/Actions/Manager.Reset"},
            "Oem": {
                "OemManager.v1_0_0#OemManager.ExportSystemConfiguration": {
                    "ExportFormat@Redfish.AllowableValues": ["XML", "JSON"],
                    "ExportUse@Redfish.AllowableValues": ["Default", "Clone", "Replace"],
                    "IncludeInExport@Redfish.AllowableValues": ["Default", "IncludeReadOnly",
                                                                "IncludePasswordHashValues"],
                    "ShareParameters": share,
                    "target": f"{MGR}/Actions/Oem/EID_674_Manager.ExportSystemConfiguration"},
                "OemManager.v1_0_0#OemManager.ImportSystemConfiguration": {
                    "HostPowerState@Redfish.AllowableValues": ["On", "Off"],
                    "ImportSystemConfiguration@Redfish.AllowableValues": ["TimeToWait", "ImportBuffer"],
                    "ShareParameters": share,
                    "ShutdownType@Redfish.AllowableValues": ["Graceful", "Forced", "NoReboot"],
                    "target": f"{MGR}/Actions/Oem/EID_674_Manager.ImportSystemConfiguration"},
            },
        },
        "CommandShell": {"ConnectTypesSupported": ["SSH", "IPMI"], "ConnectTypesSupported@odata.count": 2,
                         "MaxConcurrentSessions": 5, "ServiceEnabled": True},
        "DateTime": "2026-01-01T00:00:00+00:00", "DateTimeLocalOffset": "+00:00", "Description": "BMC",
        "EthernetInterfaces": ref(f"{MGR}/EthernetInterfaces"), "FirmwareVersion": idrac,
        "GraphicalConsole": {"ConnectTypesSupported": ["KVMIP"], "ConnectTypesSupported@odata.count": 1,
                             "MaxConcurrentSessions": 6, "ServiceEnabled": True},
        "HostInterfaces": ref(f"{MGR}/HostInterfaces"), "Id": MANAGER_ID,
        "Links": {"ManagerForChassis": [ref(CHS)], "ManagerForChassis@odata.count": 1,
                  "ManagerForServers": [ref(SYS)], "ManagerForServers@odata.count": 1,
                  "ManagerInChassis": ref(CHS), "Oem": {"Dell": dell_links}},
        "LogServices": ref(f"{MGR}/LogServices"), "ManagerType": "BMC", "Model": "14G Monolithic",
        "Name": "Manager", "NetworkProtocol": ref(f"{MGR}/NetworkProtocol"),
        "Oem": {"Dell": {"DelliDRACCard": {"@odata.id": f"{DELL_MGR}/DelliDRACCard/iDRAC.Embedded.1-1_0x23_IDRACinfo",
                                           "@odata.type": "#DelliDRACCard.v1_1_0.DelliDRACCard",
                                           "IPMIVersion": "2.0", "URLString": f"https://{bmc.host}:443"}}},
        "PowerState": "On", "Redundancy": [], "Redundancy@odata.count": 0,
        "SerialConsole": {"ConnectTypesSupported": [], "ConnectTypesSupported@odata.count": 0,
                          "MaxConcurrentSessions": 0, "ServiceEnabled": False},
        "SerialInterfaces": ref(f"{MGR}/SerialInterfaces"), "Status": {"Health": "OK", "State": "Enabled"},
        "UUID": f"3256444f-c0c7-3780-5310-{bmc.index:012d}", "VirtualMedia": ref(f"{MGR}/VirtualMedia"),
    }


def chassis(bmc: BMC) -> dict[str, Any]:
    return {"@odata.id": CHS, "@odata.type": "#Chassis.v1_11_0.Chassis", "Id": SYSTEM_ID,
            "Name": "Computer System Chassis", "ChassisType": "RackMount", "Manufacturer": "Dell Inc.",
            "Model": bmc.model, "SerialNumber": f"CN7{bmc.index:09d}", "SKU": bmc.service_tag,
            "PowerState": "On" if bmc.power_state == "On" else "Off",
            "Status": {"Health": "OK", "HealthRollup": "OK", "State": "Enabled"},
            "Links": {"ComputerSystems": [ref(SYS)], "ManagedBy": [ref(MGR)]}}


def virtual_media(bmc: BMC, slot: str) -> dict[str, Any]:
    vm = bmc.virtual_media[slot]
    base = f"{MGR}/VirtualMedia/{slot}"
    image = vm["Image"]
    return {"@odata.id": base, "@odata.type": "#VirtualMedia.v1_3_0.VirtualMedia", "Id": slot,
            "Name": "Virtual CD" if slot == "CD" else "Virtual Removable Disk",
            "Actions": {"#VirtualMedia.EjectMedia": {"target": f"{base}/Actions/VirtualMedia.EjectMedia"},
                        "#VirtualMedia.InsertMedia": {"target": f"{base}/Actions/VirtualMedia.InsertMedia"}},
            "ConnectedVia": "URI" if vm["Inserted"] else "NotConnected", "Image": image,
            "ImageName": image.rsplit("/", 1)[-1] if image else None, "Inserted": vm["Inserted"],
            "MediaTypes": vm["MediaTypes"], "MediaTypes@odata.count": len(vm["MediaTypes"]),
            "WriteProtected": vm["WriteProtected"], "TransferProtocolType": None}


def update_service() -> dict[str, Any]:
    return {"@odata.id": f"{R}/UpdateService", "@odata.type": "#UpdateService.v1_8_0.UpdateService",
            "Id": "UpdateService", "Name": "Update Service", "Description": "Represents the properties "
            "for the Update Service", "ServiceEnabled": True, "HttpPushUri": f"{R}/UpdateService/FirmwareInventory",
            "Status": {"Health": "OK", "State": "Enabled"},
            "FirmwareInventory": ref(f"{R}/UpdateService/FirmwareInventory"),
            "Actions": {"#UpdateService.SimpleUpdate": {
                "target": f"{R}/UpdateService/Actions/UpdateService.SimpleUpdate",
                "TransferProtocol@Redfish.AllowableValues": ["HTTP", "NFS", "CIFS", "TFTP", "HTTPS", "FTP"]}}}


def fw_id(c) -> str:
    return f"Installed-{c.component_id}-{c.version}"


def firmware(bmc: BMC, c) -> dict[str, Any]:
    return {"@odata.id": f"{R}/UpdateService/FirmwareInventory/{fw_id(c)}",
            "@odata.type": "#SoftwareInventory.v1_5_0.SoftwareInventory", "Id": fw_id(c), "Name": c.name,
            "Description": "Represents Firmware Inventory", "SoftwareId": c.component_id, "Version": c.version,
            "Updateable": True, "ReleaseDate": "00:00:00Z",
            "Status": {"Health": "OK", "State": "Enabled"},
            "Oem": {"Dell": {"DellSoftwareInventory": {"ComponentID": c.component_id, "ComponentType":
                                                       "BIOS" if c.device == "BIOS" else "FRMW"}}}}


def job(j: Job) -> dict[str, Any]:
    return {"@odata.context": f"{R}/$metadata#DellJob.DellJob", "@odata.id": f"{MGR}/Jobs/{j.id}",
            "@odata.type": "#DellJob.v1_1_0.DellJob", "ActualRunningStartTime": None,
            "ActualRunningStopTime": None, "CompletionTime": j.completion_time, "Description": "Job Instance",
            "EndTime": "TIME_NA", "Id": j.id, "JobState": j.state, "JobType": j.job_type,
            "Message": j.message, "MessageArgs": [], "MessageArgs@odata.count": 0,
            "MessageId": j.message_id if "." in j.message_id else f"IDRAC.2.8.{j.message_id}",
            "Name": j.name, "PercentComplete": j.percent, "StartTime": j.start_time,
            "TargetSettingsURI": None}


_TASK_STATE = {"New": "New", "Downloading": "Running", "Downloaded": "Running", "Scheduled": "Starting",
               "Running": "Running", "Completed": "Completed", "Failed": "Exception",
               "CompletedWithErrors": "Completed"}


def task(j: Job) -> dict[str, Any]:
    dell = job(j)
    dell.pop("@odata.id")
    dell.pop("@odata.context")
    return {"@odata.context": f"{R}/$metadata#Task.Task", "@odata.id": f"{R}/TaskService/Tasks/{j.id}",
            "@odata.type": "#Task.v1_4_3.Task",
            "Description": "Server Configuration and other Tasks running on iDRAC are listed here",
            "Id": j.id, "Messages": [{"Message": j.message, "MessageArgs": [], "MessageArgs@odata.count": 0,
                                      "MessageId": dell["MessageId"]}],
            "Messages@odata.count": 1, "Name": j.name, "Oem": {"Dell": dell},
            "PercentComplete": j.percent, "TaskState": _TASK_STATE.get(j.state, "Running"),
            "TaskStatus": "Critical" if j.state == "Failed" else "OK"}


def dell_service(name: str, odata_type: str, actions: dict[str, dict], description: str,
                 ident: str | None = None) -> dict[str, Any]:
    return {"@odata.context": f"{R}/$metadata#{odata_type}.{odata_type}", "@odata.id": f"{DELL_MGR}/{name}",
            "@odata.type": f"#{odata_type}.v1_1_0.{odata_type}", "Actions": actions,
            "Description": description, "Id": ident or name, "Name": name}


def job_service() -> dict[str, Any]:
    return dell_service("DellJobService", "DellJobService", {"#DellJobService.DeleteJobQueue": {
        "target": f"{DELL_MGR}/DellJobService/Actions/DellJobService.DeleteJobQueue"}},
        "The DellJobService resource provides some actions to support Job management functionality.",
        "Job Service")


def lc_service() -> dict[str, Any]:
    return dell_service("DellLCService", "DellLCService", {"#DellLCService.GetRemoteServicesAPIStatus": {
        "target": f"{DELL_MGR}/DellLCService/Actions/DellLCService.GetRemoteServicesAPIStatus"}},
        "The DellLCService resource provides some actions to support Lifecycle Controller functionality.")


def idrac_card_service() -> dict[str, Any]:
    return dell_service("DelliDRACCardService", "DelliDRACCardService", {"#DelliDRACCardService.iDRACReset": {
        "Force@Redfish.AllowableValues": ["Graceful", "Force"],
        "target": f"{DELL_MGR}/DelliDRACCardService/Actions/DelliDRACCardService.iDRACReset"}},
        "The DelliDRACCardService resource provides some actions to support iDRAC configurations.")
